"""Every line the local stack printed (its functions' logs included) holds no email address, LINE user
id, access token, channel secret, tracking token, the local site's secret server key or its identity
secret.

The module drives the flows that handle such data itself, on a stack of its own, so it passes alone
and in any order: it collects events with contact traits, answers LINE follow and postback webhooks,
links a LINE account, sends LINE messages and mail, redirects a click, counts an open, unsubscribes
and suppresses a bounce. Then it reads everything that stack printed."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cems.cli import main as cems
from cems.line.dispatch import LineDispatch

from tests.e2e.conftest import (
    LocalStackClient,
    eventually,
    privacy_findings,
    started_stack,
)
from tests.e2e.test_email_journey import EXAMPLE, _customer, _mails, _request

pytestmark = pytest.mark.e2e

FOLLOW = Path(__file__).parents[2] / "events" / "line_webhook" / "follow.json"


def _collect(stack: LocalStackClient, run: str) -> None:
    """Events with contact traits, from the shop's server and from a page."""
    traits = {"email": f"privacy.{run}@example.com", "email_opt_in": True, "phone": "090-1234-5678"}
    stack.post("/v1/identify", {"userId": f"privacy-{run}", "traits": traits})
    stack.post("/v1/track", {"userId": f"privacy-{run}", "event": "Product Viewed", "properties": {}})
    stack.post(
        "/v1/identify",
        {"anonymousId": str(uuid.uuid4()), "userId": f"claimed-{run}", "traits": {"email": "x@example.jp"}},
        key=stack.write_key,
    )
    stack.drain()


def _link_button_token(stack: LocalStackClient, line_user_id: str) -> str | None:
    """The link token CEMS replied with (a button to the link page) to this LINE user's follow."""
    with urllib.request.urlopen(f"{stack.http_url}/_local/line/messages", timeout=60) as answer:
        snapshot = json.loads(answer.read())
    tokens = {t["link_token"] for t in snapshot["link_tokens"] if t["user_id"] == line_user_id}
    return next(iter(tokens), None)


def _line(stack: LocalStackClient, run: str) -> None:
    """A follow, a postback and an account link through signed webhooks, then a LINE message sent."""
    line_user_id = "U" + secrets.token_hex(16)
    webhook = f"{stack.http_url}/line/webhook"
    assert cems(["line", "webhook", str(FOLLOW), "--url", webhook, "--user", line_user_id, "--fresh"]) == 0
    stack.postback(line_user_id, "survey=privacy&answer=yes")
    link_token = eventually(lambda: _link_button_token(stack, line_user_id), "the link button reply")
    # The shop's link page (the tag, for a signed-in customer) asks for LINE's account-link URL...
    user_id = f"privacy-{run}"
    origin = f"http://localhost:{stack.http_port}"
    body = {
        "anonymousId": str(uuid.uuid4()),
        "userId": user_id,
        "userHash": stack.user_hash(user_id),
        "linkToken": link_token,
    }
    request = urllib.request.Request(
        f"{stack.http_url}/v1/line/link?writeKey={stack.write_key}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "text/plain", "Origin": origin},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        redirect = json.loads(answer.read())["redirectUrl"]
    assert "nonce" in parse_qs(urlsplit(redirect).query)
    # ... and the (fake) LINE page sends the accountLink event.
    with urllib.request.urlopen(redirect, timeout=60) as answer:
        assert answer.status == 200
    # A LINE message to a linked customer, through LineSendQueue and the fake LINE API.
    customer_id, _ = stack.line_customer(f"privacy-line-{run}")
    sqs = stack.client("sqs")
    dispatch = LineDispatch.model_validate(
        {
            "idempotency_key": f"privacy-{run}",
            "recipients": [customer_id],
            "messages": [{"type": "text", "text": "茶寮みどりです。"}],
        }
    )
    queue_url = sqs.get_queue_url(QueueName="LineSendQueue")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=dispatch.to_sqs_body())
    stack.drain()


def _mail(stack: LocalStackClient, run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The follow-up mail example sent to two customers; one clicks, opens and unsubscribes, the
    other's address bounces."""
    from cems.adapters.dynamodb.customers import CustomerStore

    monkeypatch.setenv("CEMS_AWS_PORT", str(urlsplit(stack.aws_url).port))
    assert cems(["scenario", "upload", str(EXAMPLE)]) == 0
    customers = CustomerStore("CustomersTable", stack.dynamodb)
    reader = _customer(stack, customers, run, "reader")
    bouncer = _customer(stack, customers, run, "bounce")
    stack.advance_clock(61)  # trigger reads the active scenarios at most once a minute
    for n, (user_id, _) in enumerate((reader, bouncer)):
        order = {"order_id": f"o-{run}-{n}", "revenue": 1800, "currency": "JPY", "products": [{"sku": "S"}]}
        stack.post("/v1/track", {"userId": user_id, "event": "Order Completed", "properties": order})
    stack.drain()
    addresses = {reader[1], bouncer[1]}

    def mails() -> dict[str, dict[str, object]] | None:
        sent = {m["destinations"][0]: m for m in _mails(stack) if set(m["destinations"]) & addresses}
        return sent if set(sent) == addresses else None

    sent = None
    for _ in range(60):  # the first mail is due a day after the purchase, inside the send window
        sent = mails()
        if sent:
            break
        stack.advance_clock(3600)
    assert sent, "the first mail reached neither customer in 60 hours of CEMS time"
    html = str(sent[reader[1]]["html"])
    for kind in ("r", "o"):
        link = re.search(rf'"(http://[^"]+/{kind}/[^"]+)"', html)
        assert link is not None
        status, _, _ = _request(stack, "GET", link.group(1))
        assert status in (200, 302)
    unsubscribe = str(sent[reader[1]]["list_unsubscribe"]).strip("<>")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = _request(stack, "POST", unsubscribe, b"List-Unsubscribe=One-Click", form)
    assert status == 200
    # The stack hands the bounce to ses_events as SNS would (asynchronously: retried, then kept on its
    # OnFailure queue) before it answers, so the answer says whether ses_events applied it.
    answer = stack.post("/_local/ses/bounce", {"to": bouncer[1]})
    assert answer["result"] == [{"records": 1}], answer
    stack.drain()


# The functions that handle contact points, tokens or secrets in the flows above and log per event.
DRIVEN_FUNCTIONS = {
    "TriggerFunction",
    "LineWebhookFunction",
    "SendLineFunction",
    "SendEmailFunction",
    "EngageFunction",
    "SesEventsFunction",
}


def _function_of(line: str) -> str | None:
    """The Lambda function a structured (Powertools JSON) log line came from, if it is one."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(line[start:])
    except ValueError:
        return None
    name = record.get("function_name") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None


@pytest.fixture(scope="module")
def driven_stack() -> Iterator[LocalStackClient]:
    """A stack of its own that has handled every kind of personal data and secret CEMS sees."""
    run = uuid.uuid4().hex[:8]
    with started_stack() as stack, pytest.MonkeyPatch.context() as monkeypatch:
        _collect(stack, run)
        _line(stack, run)
        _mail(stack, run, monkeypatch)
        yield stack


def test_no_personal_data_or_secret_in_any_log_line(driven_stack: LocalStackClient) -> None:
    # How many lines there are depends on how many clock steps the first mail took; which functions
    # spoke does not: each one that handled the personal data above must have logged something,
    # or this test would pass on a stack whose logging is off.
    # The stack's output reaches the transcript through a reader thread, so the last function's
    # lines (ses_events, after the bounce) may still be on their way: wait for them, never a sleep.
    def silent() -> list[str]:
        spoke = {_function_of(line) for line in list(driven_stack.running.transcript)}
        return sorted(DRIVEN_FUNCTIONS - spoke)

    eventually(
        lambda: not silent() or None, f"a log line from each of {sorted(DRIVEN_FUNCTIONS)} (is logging on?)"
    )
    found = privacy_findings(driven_stack)
    assert not found, "\n".join(found[:20])
