"""Broadcasts, and the date-trigger backfill that uses their fan-out, end to end on the local stack.

A segment broadcast: LINE friends follow through the signed webhook
and answer a survey by postback, a shop customer identifies through /v1/identify; a broadcast
scenario is uploaded with `cems scenario upload`; when CEMS's clock passes its time, tick (the
stack's schedule poller) starts the run, the broadcast function (BroadcastQueue's poller) works
through the segments, and the fake LINE API has the message exactly once for each customer in the
audience and for nobody else.

The stack's CustomersTable is shared with the other e2e tests, and a broadcast scans all of it: the
audience is this run's own survey question, so nobody else's customers are in it."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.journeys import EnrolmentStore
from cems.adapters.dynamodb.keys import RECIPIENT_PREFIX
from cems.cli import main
from cems.models import Channel, ChannelState, Profile
from cems.scenario import engine

from tests.e2e.conftest import ROOT, LocalStackClient, privacy_findings, started_stack

pytestmark = pytest.mark.e2e

FOLLOW = ROOT / "events" / "line_webhook" / "follow.json"
UNFOLLOW = ROOT / "events" / "line_webhook" / "unfollow.json"
TOKYO = ZoneInfo("Asia/Tokyo")


def _scenario(run: str, at: str) -> dict[str, Any]:
    return {
        "id": f"e2e-broadcast-{run}",
        "name": f"新茶のご案内 e2e {run}",
        "trigger": {"type": "broadcast", "at": at},
        "audience": {
            "kind": "all",
            "conditions": [
                {"kind": "reachable", "channel": "line"},
                {"kind": "survey", "question": f"shincha_{run}", "answers": ["yes"]},
            ],
        },
        "entry": {"reentry": "never"},
        # Whatever hour the shared clock has reached, the send goes out at once.
        "send_window": {"start": "00:00", "end": "23:59"},
        "steps": [
            {
                "id": "announce",
                "type": "send",
                "channel": "line",
                "line": [{"type": "text", "text": f"新茶が入荷しました🍃 ({run})"}],
            },
            {"id": "done", "type": "end"},
        ],
    }


def _webhook(stack: LocalStackClient, sample: Path, line_user_id: str) -> None:
    """A sample webhook body as this LINE user, signed and posted by `cems line webhook`."""
    url = f"{stack.http_url}/line/webhook"
    assert main(["line", "webhook", str(sample), "--url", url, "--user", line_user_id, "--fresh"]) == 0


def test_a_broadcast_reaches_its_audience_once(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    run = uuid.uuid4().hex[:8]
    question = f"shincha_{run}"
    friends = {name: "U" + uuid.uuid4().hex for name in ("yes1", "yes2", "no", "left")}
    for line_user_id in friends.values():
        _webhook(local_stack, FOLLOW, line_user_id)
    for name, line_user_id in friends.items():
        local_stack.postback(line_user_id, f"survey={question}&answer={'no' if name == 'no' else 'yes'}")
    _webhook(local_stack, UNFOLLOW, friends["left"])  # said yes, then blocked the account
    # A shop customer with the answer as a trait but no LINE: not reachable, so not in the audience.
    local_stack.post("/v1/identify", {"userId": f"web-{run}", "traits": {f"survey.{question}": "yes"}})
    local_stack.drain()

    at = (local_stack.now() + timedelta(minutes=30)).astimezone(TOKYO).replace(microsecond=0)
    document = _scenario(run, at.isoformat())
    path = tmp_path / f"{document['id']}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    assert main(["scenario", "upload", str(path)]) == 0
    before = len(local_stack.line_messages())

    local_stack.advance_clock(20 * 60)
    assert not [m for m in local_stack.line_messages()[before:] if run in json.dumps(m, ensure_ascii=False)]

    local_stack.advance_clock(15 * 60)  # past the broadcast time
    local_stack.drain()
    local_stack.advance_clock(3600)  # and nothing more afterwards

    sent = [m for m in local_stack.line_messages()[before:] if run in json.dumps(m, ensure_ascii=False)]
    assert all(m["endpoint"] in ("push", "multicast") for m in sent), sent
    assert Counter(m["to"] for m in sent) == {friends["yes1"]: 1, friends["yes2"]: 1}, sent


def test_a_date_trigger_uploaded_after_the_purchase_still_reaches_the_buyer(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The date-trigger backfill: a customer who bought before the scenario existed is scheduled when
    it is uploaded (through the broadcast fan-out) and gets the message at the moment, once."""
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    run = uuid.uuid4().hex[:8]
    buyer, buyer_line = local_stack.line_customer(f"bf-buyer-{run}")
    _, browser_line = local_stack.line_customer(f"bf-browser-{run}")
    for user_id in (f"bf-buyer-{run}", f"bf-browser-{run}"):
        local_stack.post("/v1/identify", {"userId": user_id, "traits": {"backfill_run": run}})
    order = {
        "order_id": f"o-bf-{run}",
        "revenue": 1620,
        "currency": "JPY",
        "products": [{"product_id": "sencha"}],
    }
    local_stack.post(
        "/v1/track",
        {"userId": f"bf-buyer-{run}", "event": "Order Completed", "properties": order},
    )
    local_stack.drain()

    scenario_id = f"e2e-backfill-{run}"
    document = {
        "id": scenario_id,
        "name": f"お茶のおかわり e2e {run}",
        "trigger": {"type": "date", "date": "last_purchase_at", "offset": "1d", "at": "10:00"},
        # Other tests' buyers share the stack's tables: only this run's customers are in the audience.
        "audience": {"kind": "trait", "trait": "backfill_run", "value": run},
        "send_window": {"start": "00:00", "end": "23:59"},
        "steps": [
            {
                "id": "refill",
                "type": "send",
                "channel": "line",
                "line": [{"type": "text", "text": f"おかわり ({run})"}],
            },
            {"id": "done", "type": "end"},
        ],
    }
    path = tmp_path / f"{scenario_id}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    assert main(["scenario", "upload", str(path)]) == 0
    local_stack.drain()  # the backfill's segments
    enrolments = EnrolmentStore("JourneysTable", local_stack.dynamodb, model=engine.Enrolment)
    assert enrolments.schedule(buyer, scenario_id) is not None
    before = len(local_stack.line_messages())

    def sent() -> list[dict[str, Any]]:
        return [m for m in local_stack.line_messages()[before:] if run in json.dumps(m, ensure_ascii=False)]

    for _ in range(12):  # the day after the purchase at 10:00 in Tokyo is at most two days away
        local_stack.advance_clock(6 * 3600)
        if sent():
            break
    local_stack.advance_clock(6 * 3600)  # and nothing more afterwards
    assert [m["to"] for m in sent()] == [buyer_line], sent()
    assert enrolments.schedule(buyer, scenario_id) is None
    assert browser_line not in {m["to"] for m in sent()}


@pytest.fixture(scope="module")
def own_stack() -> Iterator[LocalStackClient]:
    """A stack of this module's own: a broadcast's pages are pages of the whole CustomersTable, so
    the LINE calls of a 1,200-customer audience are exactly 3 only when nobody else's customers
    share its pages."""
    with started_stack() as stack:
        yield stack
        found = privacy_findings(stack)
        assert not found, "\n".join(found[:20])


def test_a_broadcast_to_1200_customers_with_identical_content_makes_3_line_calls(
    own_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 11's check: identical content goes by multicast. 1,200 LINE friends in the audience, the
    scenario uploaded with `cems scenario upload`, the clock moved past its time: exactly 3 LINE
    calls (500 + 500 + 200 recipients), each customer messaged once and recorded once in
    DeliveriesTable."""
    stack = own_stack
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(stack.aws_url).port))
    run = uuid.uuid4().hex[:8]
    customers = CustomerStore("CustomersTable", stack.dynamodb)
    now = stack.now()
    line_ids: dict[str, str] = {}
    for start in range(0, 1200, 25):
        requests = []
        for n in range(start, start + 25):
            customer_id = f"cus_bc{run}{n:04d}"
            line_ids[customer_id] = "U" + uuid.uuid4().hex
            profile = Profile(
                customer_id=customer_id,
                line_user_id=line_ids[customer_id],
                channels={Channel.LINE: ChannelState(reachable=True, consent=True, updated_at=now)},
                traits={"bc_run": run},
                first_seen_at=now,
                updated_at=now,
            )
            requests.append({"PutRequest": {"Item": customers.profile_item(profile)}})
        stack.dynamodb.batch_write_item(RequestItems={"CustomersTable": requests})

    scenario_id = f"e2e-multicast-{run}"
    at = (now + timedelta(minutes=30)).astimezone(TOKYO).replace(microsecond=0)
    document = {
        **_scenario(run, at.isoformat()),
        "id": scenario_id,
        "audience": {"kind": "trait", "trait": "bc_run", "value": run},
    }
    path = tmp_path / f"{scenario_id}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    assert main(["scenario", "upload", str(path)]) == 0
    stack.advance_clock(35 * 60)  # past the broadcast time: tick starts it, the pages are sent
    stack.drain()

    snapshot = _line_snapshot(stack)
    ours = {
        m["request_id"] for m in snapshot["messages"] if run in json.dumps(m["message"], ensure_ascii=False)
    }
    calls = [c for c in snapshot["calls"] if c.get("request_id") in ours]
    assert sorted(c["recipients"] for c in calls) == [200, 500, 500], calls
    assert all(c["endpoint"] == "multicast" for c in calls)
    received = Counter(m["to"] for m in snapshot["messages"] if m["request_id"] in ours)
    assert received == dict.fromkeys(line_ids.values(), 1)

    recorded: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for page in stack.dynamodb.get_paginator("scan").paginate(
        TableName="DeliveriesTable",
        FilterExpression="scenario_id = :s AND begins_with(sk, :r)",
        ExpressionAttributeValues={":s": {"S": scenario_id}, ":r": {"S": RECIPIENT_PREFIX}},
    ):
        for item in page["Items"]:
            recorded[item["customer_id"]["S"]] += 1
            statuses[item["status"]["S"]] += 1
    assert recorded == dict.fromkeys(line_ids, 1)
    assert statuses == {"sent": 1200}


def _line_snapshot(stack: LocalStackClient) -> dict[str, Any]:
    """The fake LINE API's calls and messages (each message with the request id of its call)."""
    with urllib.request.urlopen(f"{stack.http_url}/_local/line/messages", timeout=30) as answer:
        snapshot: dict[str, Any] = json.loads(answer.read())
        return snapshot
