"""The post_purchase_tea example end to end on the local stack: LINE customers buy the gyokuro through
/v1/track; on day 3 at 10:00 each (but the holdout) is asked for the taste; the answer comes back
as a signed LINE postback; the branch, the A/B offer and the day-30 refill reminder follow, over
CEMS's clock moved forward. Holdout customers receive nothing."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import datetime
from urllib.parse import urlparse

import pytest
from cems.cli import main
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.webhook import sign
from cems.models import Channel, ChannelState
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.store import EnrolmentStore
from cems.store import CustomerStore, IdentityKey, IdentityKind

from tests.e2e.conftest import ROOT, LocalStackClient
from tests.e2e.test_scenario_cart_abandonment import _messages, _post

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "post_purchase_tea.json"
SCENARIO = "post-purchase-yame-gyokuro"
ANSWERS = ("great", "ok", "bitter")
DAY3 = "お味はいかがでしたか"
BRANCH = {"bitter": "50〜60℃", "great": "レビューのお願い"}
OFFER = {"A-coupon": "GYOKURO10", "B-pairing": "玉露に合う和菓子"}
DAY30 = "残り少なくなっていませんか"


def _line_customer(stack: LocalStackClient, customers: CustomerStore, user_id: str) -> tuple[str, str]:
    """A shop customer with a LINE contact and LINE identity, as account linking leaves them."""
    _post(stack, "/v1/identify", {"userId": user_id, "traits": {"last_name": "山田"}})
    stack.drain()
    customer_id = customers.customer_for_user_id(user_id)
    assert customer_id is not None
    profile = customers.profile(customer_id)
    assert profile is not None
    line_user_id = "U" + uuid.uuid4().hex
    linked = profile.model_copy(
        update={
            "line_user_id": line_user_id,
            "channels": {
                **profile.channels,
                Channel.LINE: ChannelState(reachable=True, consent=True, updated_at=profile.updated_at),
            },
        }
    )
    stack.dynamodb.put_item(TableName="CustomersTable", Item=customers.profile_item(linked))
    claim = customers.claim_action(
        IdentityKey(IdentityKind.LINE, line_user_id), customer_id, profile.updated_at
    )
    stack.dynamodb.transact_write_items(TransactItems=[claim])
    return customer_id, line_user_id


def _now(stack: LocalStackClient) -> datetime:
    with urllib.request.urlopen(f"{stack.http_url}/_local/clock", timeout=10) as answer:
        return datetime.fromisoformat(json.loads(answer.read())["now"])


def _postback(stack: LocalStackClient, line_user_id: str, answer: str) -> None:
    """A postback signed with the local channel secret, as LINE would post it, at CEMS's time."""
    body = {
        "destination": "U0f3c9a7e21b84d6c5a09e8f7d6c5b4a3",
        "events": [
            {
                "type": "postback",
                "timestamp": int(_now(stack).timestamp() * 1000),
                "source": {"type": "user", "userId": line_user_id},
                "mode": "active",
                "webhookEventId": uuid.uuid4().hex.upper()[:26],
                "deliveryContext": {"isRedelivery": False},
                "replyToken": uuid.uuid4().hex,
                "postback": {"data": f"survey=gyokuro_taste&answer={answer}"},
            }
        ],
    }
    raw = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{stack.http_url}/line/webhook",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/json", "X-Line-Signature": sign(raw, LOCAL_CHANNEL_SECRET)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def _texts(stack: LocalStackClient, before: int) -> dict[str, list[str]]:
    """Each LINE user id's messages since `before`, as JSON text."""
    out: dict[str, list[str]] = {}
    for m in _messages(stack)[before:]:
        out.setdefault(m["to"], []).append(json.dumps(m["message"], ensure_ascii=False))
    return out


def test_post_purchase_journey_with_survey_split_and_holdout(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    customers = CustomerStore("CustomersTable", local_stack.dynamodb)
    enrolments = EnrolmentStore("JourneysTable", local_stack.dynamodb, model=engine.Enrolment)
    run = uuid.uuid4().hex[:8]
    people: list[tuple[str, str, str]] = []  # (customer id, LINE user id, user id)
    for n in range(40):
        customer_id, line_user_id = _line_customer(local_stack, customers, f"tea-{run}-{n}")
        people.append((customer_id, line_user_id, f"tea-{run}-{n}"))
        if n >= 19 and any(in_holdout(SCENARIO, c, 10) for c, _, _ in people):
            break
    holdout = {line for c, line, _ in people if in_holdout(SCENARIO, c, 10)}
    assert holdout, "no holdout customer in 40"
    before = len(_messages(local_stack))
    _post(local_stack, "/_local/clock", {"advance_seconds": 61})  # the trigger's scenario list expires

    for _, _, user_id in people:
        order = {
            "order_id": f"o-{user_id}",
            "revenue": 3240,
            "currency": "JPY",
            "products": [{"product_id": "yame-gyokuro-100", "sku": "GYO-YAME-100", "price": 3240}],
        }
        _post(local_stack, "/v1/track", {"userId": user_id, "event": "Order Completed", "properties": order})
    local_stack.drain()
    for customer_id, _, _ in people:
        enrolment = enrolments.get(customer_id, SCENARIO)
        assert enrolment is not None and enrolment.state is engine.EnrolmentState.WAITING
    treated = [(c, line) for c, line, _ in people if line not in holdout]

    # On to day 3 at 10:00 (Tokyo), in 6-hour moves, until every treated customer was asked.
    for _ in range(20):
        _post(local_stack, "/_local/clock", {"advance_seconds": 6 * 3600})
        texts = _texts(local_stack, before)
        if all(any(DAY3 in t for t in texts.get(line, [])) for _, line in treated):
            break
    else:
        raise AssertionError(f"not every customer was asked on day 3: {texts}")

    answers = {line: ANSWERS[n % len(ANSWERS)] for n, (_, line) in enumerate(treated)}
    for line, answer in answers.items():
        _postback(local_stack, line, answer)
    local_stack.drain()
    # On past day 30, a day a request in 3-hour steps (each step runs the due work): a send due at
    # 10:00 goes out by 13:00, inside the 09:00-20:00 window, and the run takes a third of hourly steps.
    for _ in range(28):
        _post(local_stack, "/_local/clock", {"advance_seconds": 86400, "step_seconds": 3 * 3600})

    texts = _texts(local_stack, before)
    assert not holdout & set(texts), "holdout customers were sent messages"
    variants: set[str] = set()
    for customer_id, line in treated:
        got = texts.get(line, [])
        enrolment = enrolments.get(customer_id, SCENARIO)
        assert enrolment is not None and enrolment.variant in OFFER, enrolment
        variants.add(enrolment.variant)
        assert [DAY3 in t for t in got].count(True) == 1, got
        answer = answers[line]
        for branch_answer, marker in BRANCH.items():
            assert any(marker in t for t in got) == (branch_answer == answer), (answer, got)
        for variant, marker in OFFER.items():
            assert any(marker in t for t in got) == (variant == enrolment.variant), got
        assert [DAY30 in t for t in got].count(True) == 1, got
        assert enrolment.state is engine.EnrolmentState.COMPLETED, enrolment
    assert variants == set(OFFER)
