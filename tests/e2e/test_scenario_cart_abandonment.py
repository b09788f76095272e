"""Cart abandonment end to end on the local stack: the scenario uploaded with `cems scenario upload`,
two LINE customers add to the cart through /v1/track, one buys; when CEMS's clock has moved on, the
trigger and tick functions (run by the stack's stream and schedule pollers) have sent the fake LINE
exactly one reminder, to the one who did not buy."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest
from cems.cli import main
from cems.scenario.assignment import in_holdout

from tests.e2e.conftest import ROOT, LocalStackClient

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "cart_abandonment.json"


def _line_customer(stack: LocalStackClient, run: str) -> tuple[str, str]:
    """A LINE-linked shop customer outside the 5 % holdout: (user id, LINE user id)."""
    for n in range(20):
        user_id = f"cart-{run}-{n}"
        customer_id, line_user_id = stack.line_customer(user_id)
        if not in_holdout("cart-abandonment", customer_id, 5):
            return user_id, line_user_id
    raise AssertionError("no customer outside the holdout in 20 tries")


def test_only_the_customer_who_did_not_buy_is_reminded(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    run = uuid.uuid4().hex[:8]
    lingers, lingers_line = _line_customer(local_stack, run)
    buys, buys_line = _line_customer(local_stack, run + "b")
    before = len(local_stack.line_messages())
    # trigger reads the active scenarios at most once a minute: let a list read before the upload expire.
    local_stack.advance_clock(61)

    for user_id in (lingers, buys):
        product = {"product_id": "gyokuro-100", "name": "玉露 100g", "price": 2400, "quantity": 1}
        local_stack.post("/v1/track", {"userId": user_id, "event": "Product Added", "properties": product})
    local_stack.drain()
    order = {
        "order_id": f"o-{run}",
        "revenue": 2400,
        "currency": "JPY",
        "products": [{"product_id": "gyokuro-100"}],
    }
    local_stack.post("/v1/track", {"userId": buys, "event": "Order Completed", "properties": order})
    local_stack.drain()
    assert len(local_stack.line_messages()) == before  # nobody is reminded within the hour

    # Two hours on; then, should that be in quiet hours (21:00-09:00 in Tokyo), on to the window.
    local_stack.advance_clock(2 * 3600)
    for _ in range(12):
        if len(local_stack.line_messages()) > before:
            break
        local_stack.advance_clock(3600)
    local_stack.advance_clock(3600)  # and nothing more afterwards

    sent = local_stack.line_messages()[before:]
    assert [m["to"] for m in sent] == [lingers_line], sent
    assert "玉露 100g" in json.dumps(sent[0]["message"], ensure_ascii=False)
    assert all(m["to"] != buys_line for m in sent)
