"""The post_purchase_tea example end to end on the local stack: LINE customers buy the gyokuro through
/v1/track; on day 3 at 10:00 each (but the holdout) is asked for the taste; the answer comes back
as a signed LINE postback; the branch, the A/B offer and the day-30 refill reminder follow, over
CEMS's clock moved forward. Holdout customers receive nothing."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest
from cems.adapters.dynamodb.journeys import EnrolmentStore
from cems.cli import main
from cems.scenario import engine
from cems.scenario.assignment import in_holdout

from tests.e2e.conftest import ROOT, LocalStackClient

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "post_purchase_tea.json"
SCENARIO = "post-purchase-yame-gyokuro"
ANSWERS = ("great", "ok", "bitter")
DAY3 = "お味はいかがでしたか"
BRANCH = {"bitter": "50〜60℃", "great": "レビューのお願い"}
OFFER = {"A-coupon": "GYOKURO10", "B-pairing": "玉露に合う和菓子"}
DAY30 = "残り少なくなっていませんか"


def _texts(stack: LocalStackClient, before: int) -> dict[str, list[str]]:
    """Each LINE user id's messages since `before`, as JSON text."""
    out: dict[str, list[str]] = {}
    for m in stack.line_messages()[before:]:
        out.setdefault(m["to"], []).append(json.dumps(m["message"], ensure_ascii=False))
    return out


def test_post_purchase_journey_with_survey_split_and_holdout(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    enrolments = EnrolmentStore("JourneysTable", local_stack.dynamodb, model=engine.Enrolment)
    run = uuid.uuid4().hex[:8]
    people: list[tuple[str, str, str]] = []  # (customer id, LINE user id, user id)
    for n in range(40):
        customer_id, line_user_id = local_stack.line_customer(f"tea-{run}-{n}")
        people.append((customer_id, line_user_id, f"tea-{run}-{n}"))
        if n >= 19 and any(in_holdout(SCENARIO, c, 10) for c, _, _ in people):
            break
    holdout = {line for c, line, _ in people if in_holdout(SCENARIO, c, 10)}
    assert holdout, "no holdout customer in 40"
    before = len(local_stack.line_messages())
    local_stack.advance_clock(61)  # the trigger's scenario list expires

    for _, _, user_id in people:
        order = {
            "order_id": f"o-{user_id}",
            "revenue": 3240,
            "currency": "JPY",
            "products": [{"product_id": "yame-gyokuro-100", "sku": "GYO-YAME-100", "price": 3240}],
        }
        local_stack.post("/v1/track", {"userId": user_id, "event": "Order Completed", "properties": order})
    local_stack.drain()
    for customer_id, _, _ in people:
        enrolment = enrolments.get(customer_id, SCENARIO)
        assert enrolment is not None and enrolment.state is engine.EnrolmentState.WAITING
    treated = [(c, line) for c, line, _ in people if line not in holdout]

    # On to day 3 at 10:00 (Tokyo), in 6-hour moves, until every treated customer was asked.
    for _ in range(20):
        local_stack.advance_clock(6 * 3600)
        texts = _texts(local_stack, before)
        if all(any(DAY3 in t for t in texts.get(line, [])) for _, line in treated):
            break
    else:
        raise AssertionError(f"not every customer was asked on day 3: {texts}")

    answers = {line: ANSWERS[n % len(ANSWERS)] for n, (_, line) in enumerate(treated)}
    for line, answer in answers.items():
        local_stack.postback(line, f"survey=gyokuro_taste&answer={answer}")
    local_stack.drain()
    # On past day 30, a day a request in 6-hour steps (each step runs the due work): a send due at
    # 10:00 goes out by 16:00, still inside the 09:00-20:00 window, and any four steps in a row land
    # in it at least once (the window is 11 hours). Fewer steps is most of this module's time.
    for _ in range(28):
        local_stack.advance_clock(86400, step_seconds=6 * 3600)

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
