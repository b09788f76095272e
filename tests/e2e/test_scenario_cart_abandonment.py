"""Cart abandonment end to end on the local stack: the scenario uploaded with `cems scenario upload`,
two LINE customers add to the cart through /v1/track, one buys; when CEMS's clock has moved on, the
trigger and tick functions (run by the stack's stream and schedule pollers) have sent the fake LINE
exactly one reminder, to the one who did not buy."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest
from cems.cli import main
from cems.models import Channel, ChannelState
from cems.scenario.assignment import in_holdout
from cems.store import CustomerStore

from tests.e2e.conftest import ROOT, LocalStackClient

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "cart_abandonment.json"


def _post(stack: LocalStackClient, path: str, document: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if path.startswith("/v1/"):
        headers["Authorization"] = "Basic " + base64.b64encode(f"{stack.write_key}:".encode()).decode()
    request = urllib.request.Request(
        f"{stack.http_url}{path}", data=json.dumps(document).encode(), method="POST", headers=headers
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


def _messages(stack: LocalStackClient) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{stack.http_url}/_local/line/messages", timeout=10) as answer:
        messages: list[dict[str, Any]] = json.loads(answer.read())["messages"]
        return messages


def _line_customer(stack: LocalStackClient, customers: CustomerStore, run: str) -> tuple[str, str]:
    """A shop customer (identified through /v1/identify) outside the 5 % holdout, given a LINE contact
    as account linking would: (user id, LINE user id)."""
    for n in range(20):
        user_id = f"cart-{run}-{n}"
        _post(stack, "/v1/identify", {"userId": user_id, "traits": {"last_name": "山田"}})
        stack.drain()
        customer_id = customers.customer_for_user_id(user_id)
        assert customer_id is not None
        if in_holdout("cart-abandonment", customer_id, 5):
            continue
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
        stack.dynamodb.put_item(
            TableName="CustomersTable",
            Item=customers.profile_item(linked),
        )
        return user_id, line_user_id
    raise AssertionError("no customer outside the holdout in 20 tries")


def test_only_the_customer_who_did_not_buy_is_reminded(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    customers = CustomerStore("CustomersTable", local_stack.dynamodb)
    run = uuid.uuid4().hex[:8]
    lingers, lingers_line = _line_customer(local_stack, customers, run)
    buys, buys_line = _line_customer(local_stack, customers, run + "b")
    before = len(_messages(local_stack))
    # trigger reads the active scenarios at most once a minute: let a list read before the upload expire.
    _post(local_stack, "/_local/clock", {"advance_seconds": 61})

    for user_id in (lingers, buys):
        product = {"product_id": "gyokuro-100", "name": "玉露 100g", "price": 2400, "quantity": 1}
        _post(local_stack, "/v1/track", {"userId": user_id, "event": "Product Added", "properties": product})
    local_stack.drain()
    order = {
        "order_id": f"o-{run}",
        "revenue": 2400,
        "currency": "JPY",
        "products": [{"product_id": "gyokuro-100"}],
    }
    _post(local_stack, "/v1/track", {"userId": buys, "event": "Order Completed", "properties": order})
    local_stack.drain()
    assert len(_messages(local_stack)) == before  # nobody is reminded within the hour

    # Two hours on; then, should that be in quiet hours (21:00-09:00 in Tokyo), on to the window.
    _post(local_stack, "/_local/clock", {"advance_seconds": 2 * 3600})
    for _ in range(12):
        if len(_messages(local_stack)) > before:
            break
        _post(local_stack, "/_local/clock", {"advance_seconds": 3600})
    _post(local_stack, "/_local/clock", {"advance_seconds": 3600})  # and nothing more afterwards

    sent = _messages(local_stack)[before:]
    assert [m["to"] for m in sent] == [lingers_line], sent
    assert "玉露 100g" in json.dumps(sent[0]["message"], ensure_ascii=False)
    assert all(m["to"] != buys_line for m in sent)
