"""Date-trigger backfill under moto, through the Lambda handlers: uploading a date-trigger scenario
(scenario_loader) starts a backfill run (segment messages of kind `backfill` on BroadcastQueue), the
broadcast function schedules the pending entry of every profile that already has the date, and tick
enrols each at its moment; re-uploading starts no second run. The backfill's rules (redelivery,
hand-on, a changed trigger, a run enqueued again) are tested on in-memory stores in
tests/unit/test_broadcast_behaviour.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.broadcasts import BroadcastStore
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import EnrolmentStore
from cems.models import OrderSummary
from cems.scenario import engine
from cems.scenario.broadcast import SegmentMessage, backfill_run
from cems.scenario.records import DateSchedule
from cems.settings import Settings
from cems.wiring import journey_stores

from tests.integration.journeys import drain_queue, put_customer
from tests.integration.test_broadcast_handlers import sqs_records
from tests.integration.test_scenario_loader import BUCKET, Harness
from tests.integration.test_trigger_tick_handlers import ROOT, FakeLambdaContext, _load

TABLE = "JourneysTable"
SCENARIO_ID = "refill-30d"
KEY = f"scenarios/{SCENARIO_ID}.json"
SEGMENTS = 4
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo: the upload
# Bought 2026-04-21 12:00 JST: 30 days later at 10:00 JST = 2026-05-21 01:00 UTC.
RECENT_BUYER_DUE = datetime(2026, 5, 21, 1, 0, tzinfo=UTC)
# Bought 2026-04-29 12:00 JST: 2026-05-29 01:00 UTC.
NEWER_BUYER_DUE = datetime(2026, 5, 29, 1, 0, tzinfo=UTC)


def _document(offset: str = "30d", text: str = "そろそろ") -> dict[str, Any]:
    return {
        "id": SCENARIO_ID,
        "name": "Refill reminder",
        "trigger": {"type": "date", "date": "last_purchase_at", "offset": offset, "at": "10:00"},
        "entry": {"reentry": "never"},
        "steps": [
            {"id": "remind", "type": "send", "channel": "line", "line": [{"type": "text", "text": text}]},
            {"id": "done", "type": "end"},
        ],
    }


@dataclass
class Backfill:
    uploads: Harness
    broadcast: ModuleType
    tick: ModuleType
    sqs: Any
    line_url: str
    broadcast_url: str
    stores: Stores
    enrolments: EnrolmentStore[engine.Enrolment]

    def upload(self, document: dict[str, Any]) -> dict[str, Any]:
        """Puts the file and hands scenario_loader the S3 event; the loader's result for it."""
        event = self.uploads.upload(document, KEY)
        result: dict[str, Any] = self.uploads.invoke(event)["results"][0]
        result["event"] = event
        return result

    def segments(self) -> list[dict[str, Any]]:
        return sqs_records(self.sqs, self.broadcast_url)

    def deliver(self, records: list[dict[str, Any]]) -> None:
        answer = self.broadcast.lambda_handler({"Records": records}, FakeLambdaContext())
        assert answer == {"batchItemFailures": []}

    def tick_at(self, at: datetime) -> dict[str, Any]:
        clock.freeze(at)
        answer: dict[str, Any] = self.tick.lambda_handler(
            {"detail-type": "Scheduled Event"}, FakeLambdaContext()
        )
        return answer

    def schedule(self, customer_id: str) -> DateSchedule | None:
        return self.enrolments.schedule(customer_id, SCENARIO_ID)

    def sent(self) -> list[list[str]]:
        return [d["recipients"] for d in drain_queue(self.sqs, self.line_url)]

    def buyer(self, customer_id: str, bought_at: datetime | None) -> str:
        put_customer(self.stores.customers, customer_id, NOW)
        if bought_at is not None:
            profile = self.stores.customers.profile(customer_id)
            assert profile is not None
            orders = {f"o-{customer_id}": OrderSummary(at=bought_at, amount=Decimal(3000))}
            self.stores.customers.client.put_item(
                TableName="CustomersTable",
                Item=self.stores.customers.profile_item(profile.model_copy(update={"orders": orders})),
            )
        return customer_id


@pytest.fixture
def backfill(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backfill]:
    clock.freeze(NOW)
    s3 = boto3.client("s3", region_name="ap-northeast-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    line_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    broadcast_url = sqs.create_queue(QueueName="BroadcastQueue")["QueueUrl"]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "SCENARIO_BUCKET": BUCKET,
        "LINE_SEND_QUEUE_URL": line_url,
        "BROADCAST_QUEUE_URL": broadcast_url,
        "JOURNEYS_TABLE": TABLE,
        "CEMS_DUE_SHARDS": "4",
        "CEMS_BROADCAST_SEGMENTS": str(SEGMENTS),
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    functions = ("scenario_loader", "broadcast", "tick")
    loader, broadcast, tick = (_load(f) for f in functions)
    uploads = Harness(loader, s3, journey_stores(dynamodb, Settings({"JOURNEYS_TABLE": TABLE})))
    yield Backfill(
        uploads,
        broadcast,
        tick,
        sqs,
        line_url,
        broadcast_url,
        stores,
        EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment),
    )
    for function in functions:
        sys.modules.pop(f"cems_{function}_app_under_test", None)
    aws.dynamodb.cache_clear()


def _customers(backfill: Backfill) -> dict[str, str]:
    return {
        "recent": backfill.buyer("cus_bf_recent", NOW - timedelta(days=10)),
        "newer": backfill.buyer("cus_bf_newer", NOW - timedelta(days=2)),
        "never_bought": backfill.buyer("cus_bf_prospect", None),
        "long_ago": backfill.buyer("cus_bf_old", NOW - timedelta(days=60)),  # its moment has passed
    }


def test_profiles_from_before_the_upload_get_their_moment_and_tick_enrols_them(backfill: Backfill) -> None:
    people = _customers(backfill)
    result = backfill.upload(_document())
    assert (result["outcome"], result["version"]) == ("activated", 1)
    assert backfill.uploads.report(SCENARIO_ID)["backfill"] == "started"
    records = backfill.segments()
    bodies = [json.loads(r["body"]) for r in records]
    assert sorted(b["segment"] for b in bodies) == list(range(SEGMENTS))
    assert {(b["kind"], b["run"]) for b in bodies} == {("backfill", backfill_run(1))}

    backfill.deliver(records)
    recent, newer = backfill.schedule(people["recent"]), backfill.schedule(people["newer"])
    assert recent is not None and recent.due_at == RECENT_BUYER_DUE
    assert newer is not None and newer.due_at == NEWER_BUYER_DUE
    assert backfill.schedule(people["never_bought"]) is None
    assert backfill.schedule(people["long_ago"]) is None
    assert backfill.sent() == []  # a backfill schedules; it sends nothing itself
    progress = BroadcastStore(TABLE, backfill.stores.customers.client)
    done = [progress.progress(SCENARIO_ID, backfill_run(1), n) for n in range(SEGMENTS)]
    assert all(p is not None and p.done for p in done)
    assert sum(p.scheduled for p in done if p is not None) == 2

    assert backfill.tick_at(RECENT_BUYER_DUE - timedelta(minutes=1))["dispatched"] == 0
    assert backfill.tick_at(RECENT_BUYER_DUE)["dispatched"] == 1
    assert backfill.sent() == [[people["recent"]]]
    enrolment = backfill.enrolments.get(people["recent"], SCENARIO_ID)
    assert enrolment is not None and enrolment.state is engine.EnrolmentState.COMPLETED
    assert backfill.tick_at(NEWER_BUYER_DUE)["dispatched"] == 1
    assert backfill.sent() == [[people["newer"]]]
    assert backfill.tick_at(NEWER_BUYER_DUE + timedelta(days=60))["dispatched"] == 0
    assert backfill.sent() == []
    for name in ("never_bought", "long_ago"):
        assert backfill.enrolments.get(people[name], SCENARIO_ID) is None


def test_uploading_again_starts_no_second_backfill(backfill: Backfill) -> None:
    _customers(backfill)
    first = backfill.upload(_document())
    assert len(backfill.segments()) == SEGMENTS
    # S3 delivers the same event again (the version's backfill is asked for again, and refused) ...
    again = backfill.uploads.invoke(first["event"])["results"][0]
    assert again["outcome"] == "duplicate"
    # ... and the same content uploaded once more makes no version.
    assert backfill.upload(_document())["outcome"] == "unchanged"
    assert backfill.segments() == []
    # A new version with the same trigger (new wording) needs no backfill: the entries stand.
    reworded = backfill.upload(_document(text="お茶が残り少なくなっていませんか"))
    assert (reworded["outcome"], reworded["version"]) == ("activated", 2)
    assert "backfill" not in backfill.uploads.report(SCENARIO_ID)
    assert backfill.segments() == []
    # Ticks over the next minutes start nothing either (the run was enqueued in full).
    for minutes in (1, 10):
        backfill.tick_at(NOW + timedelta(minutes=minutes))
    assert backfill.segments() == []


def test_the_backfill_sample_event_runs_through_the_broadcast_handler(backfill: Backfill) -> None:
    """events/broadcast/backfill_segment.json is what BroadcastQueue delivers for a backfill; its
    scenario is not stored here, so the record is handled (nothing to do), not failed."""
    sample = json.loads((ROOT / "events" / "broadcast" / "backfill_segment.json").read_text("utf-8"))
    message = SegmentMessage.model_validate_json(sample["Records"][0]["body"])
    assert (message.kind, message.run) == ("backfill", backfill_run(message.version))
    backfill.deliver(sample["Records"])
