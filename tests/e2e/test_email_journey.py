"""Email end to end on the local stack: the follow-up mail example uploaded with `cems scenario
upload`, three customers who agreed to email buy through /v1; a day on, each gets the first mail
from SES (moto) with both unsubscribe headers and the legal footer; the click link redirects and
counts, the pixel counts; one customer unsubscribes with one click, another's address bounces; on
day 7 only the third gets the second mail; the admin API's report shows it all."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.cli import main
from cems.models import Channel
from cems.scenario.assignment import in_holdout

from tests.e2e.conftest import HANG, ROOT, LocalStackClient

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "follow_mail.json"
SCENARIO = "follow-mail-sencha"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _request(
    stack: LocalStackClient,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    url = path if path.startswith("http") else f"{stack.http_url}{path}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=HANG) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _mails(stack: LocalStackClient) -> list[dict[str, Any]]:
    _, _, body = _request(stack, "GET", "/_local/email/messages")
    mails: list[dict[str, Any]] = json.loads(body)["mails"]
    return mails


def _customer(stack: LocalStackClient, customers: CustomerStore, run: str, name: str) -> tuple[str, str]:
    """A customer who agreed to email, outside the scenario's 10 % holdout: (user id, address).

    The consent comes from the shop's server (the secret key), which recorded the customer's opt-in:
    the one source whose email_opt_in sets consent directly (a browser's waits for double opt-in)."""
    for n in range(30):
        user_id = f"mail-{run}-{name}-{n}"
        address = f"{name}.{run}.{n}@example.com"
        traits = {"email": address, "email_opt_in": True, "last_name": "佐藤"}
        stack.post("/v1/identify", {"userId": user_id, "traits": traits}, key=stack.secret_key)
        stack.drain()
        customer_id = customers.customer_for_user_id(user_id)
        assert customer_id is not None
        profile = customers.profile(customer_id)
        assert profile is not None and profile.channels[Channel.EMAIL].consents_for(address), profile
        if not in_holdout(SCENARIO, customer_id, 10):
            return user_id, address
    raise AssertionError("no customer outside the holdout in 30 tries")


def _advance_until(stack: LocalStackClient, hours: int, done: Any) -> None:
    for _ in range(hours):
        if done():
            return
        stack.advance_clock(3600)
    assert done(), "not done in time"


def test_email_follow_up_with_unsubscribe_bounce_clicks_and_opens(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    customers = CustomerStore("CustomersTable", local_stack.dynamodb)
    run = uuid.uuid4().hex[:8]
    unsubscriber = _customer(local_stack, customers, run, "unsub")
    bouncer = _customer(local_stack, customers, run, "bounce")
    keeper = _customer(local_stack, customers, run, "keep")
    addresses = {unsubscriber[1], bouncer[1], keeper[1]}
    # trigger reads the active scenarios at most once a minute: let a list read before the upload expire.
    local_stack.advance_clock(61)
    for n, (user_id, _) in enumerate((unsubscriber, bouncer, keeper)):
        order = {
            "order_id": f"o-{run}-{n}",
            "revenue": 1800,
            "currency": "JPY",
            "products": [{"sku": "SEN-1"}],
        }
        local_stack.post("/v1/track", {"userId": user_id, "event": "Order Completed", "properties": order})
    local_stack.drain()

    def first_mails() -> list[dict[str, Any]]:
        return [m for m in _mails(local_stack) if set(m["destinations"]) & addresses]

    _advance_until(local_stack, 60, lambda: len(first_mails()) >= 3)
    mails = {m["destinations"][0]: m for m in first_mails()}
    assert set(mails) == addresses
    for mail in mails.values():
        assert "淹れ方" in mail["subject"]
        assert re.fullmatch(r"<http://[^>]+/u/[A-Za-z0-9_.\-]+>", mail["list_unsubscribe"]), mail[
            "list_unsubscribe"
        ]
        assert mail["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
        for part in (mail["text"], mail["html"]):
            assert "東京都千代田区" in part  # the sender's postal address
            assert "配信停止" in part  # how to refuse further mail
        assert "/o/" in mail["html"]  # the open pixel
        assert "https://shop.example.jp/guide/sencha" not in mail["html"]  # links go through /r/

    # The keeper clicks and opens: the link redirects to the page, the pixel is a GIF.
    keep_mail = mails[keeper[1]]
    click = re.search(r'href="(http://[^"]+/r/[^"]+)"', keep_mail["html"])
    assert click is not None
    status, headers, _ = _request(local_stack, "GET", click.group(1))
    assert status == 302 and headers["Location"] == "https://shop.example.jp/guide/sencha"
    pixel = re.search(r'src="(http://[^"]+/o/[^"]+)"', keep_mail["html"])
    assert pixel is not None
    status, headers, body = _request(local_stack, "GET", pixel.group(1))
    assert status == 200 and headers["Content-Type"].startswith("image/gif") and body.startswith(b"GIF")
    tampered = click.group(1)[:-3] + ("AAA" if not click.group(1).endswith("AAA") else "BBB")
    status, headers, body = _request(local_stack, "GET", tampered)
    assert status == 400 and "Location" not in headers

    # One click unsubscribes (RFC 8058); the replay changes nothing.
    unsubscribe = mails[unsubscriber[1]]["list_unsubscribe"].strip("<>")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        status, _, _ = _request(local_stack, "POST", unsubscribe, b"List-Unsubscribe=One-Click", form)
        assert status == 200
    # SES reports the bouncer's address as a permanent bounce.
    local_stack.post("/_local/ses/bounce", {"to": bouncer[1]})
    local_stack.post("/_local/ses/delivery", {"to": keeper[1]})
    local_stack.drain()

    def review_mails() -> list[dict[str, Any]]:
        return [m for m in first_mails() if "ご感想" in m["subject"]]

    _advance_until(local_stack, 8 * 24, lambda: len(review_mails()) >= 1)
    local_stack.advance_clock(2 * 3600)  # and no other comes later
    assert [m["destinations"] for m in review_mails()] == [[keeper[1]]]

    status, _, body = _request(local_stack, "GET", f"/admin/scenarios/{SCENARIO}/report")
    assert status == 200, body
    report = json.loads(body)
    steps = {(row["step_id"], row["variant"]): row for row in report["steps"]}
    guide = steps[("brewing-guide", None)]
    assert guide["sent"] >= 3 and guide["clicked"] >= 1 and guide["opened"] >= 1 and guide["delivered"] >= 1
    review = steps[("review-request", None)]
    assert review["sent"] >= 1 and review["suppressed"] >= 2
