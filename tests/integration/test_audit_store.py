"""The DynamoDB audit store on moto, on the table template.yaml declares: an id written once, a time
range read newest first in pages by Query per UTC day (never a Scan), the same answers as the
in-memory store (tests/fakes/audit.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.audit import DynamoAuditStore
from cems.audit import AuditAction, AuditEntry, AuditLog, AuditOutcome, AuditStore
from cems.console.access import Role
from cems.settings import Settings

from bench.aws_requests import MotoRequests, key_schemas
from tests.fakes.audit import InMemoryAuditStore
from tests.integration.conftest import template_tables

TABLE = "AuditTable"
# 23:59:58 UTC on 30 April: the entries below straddle midnight, so a range spans two day partitions.
T0 = datetime(2026, 4, 30, 23, 59, 58, tzinfo=UTC)
CUSTOMER = "cus_0123456789abcdef0123456789abcdef"


def _dynamo(dynamodb: Any) -> DynamoAuditStore:
    return DynamoAuditStore(Settings({}).tables.audit, dynamodb)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> AuditStore:
    if request.param == "memory":
        return InMemoryAuditStore()
    return _dynamo(request.getfixturevalue("dynamodb"))


def _recorder(store: AuditStore) -> tuple[AuditLog, Callable[..., AuditEntry]]:
    times = iter(T0 + timedelta(seconds=n) for n in range(1000))
    log = AuditLog(store, now=lambda: next(times))

    def record(**fields: Any) -> AuditEntry:
        arguments: dict[str, Any] = {
            "actor": "sato",
            "role": Role.ANALYST,
            "action": AuditAction.REPORT_VIEW,
            "target": "post-purchase-tea",
            "source_ip": "2001:db8::7",
        }
        return log.record(**{**arguments, **fields})

    return log, record


def test_the_template_s_table_exists_with_its_ttl(dynamodb: Any) -> None:
    assert Settings({}).tables.audit == TABLE
    ttl = dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_an_entry_reads_back_as_written(store: AuditStore) -> None:
    log, record = _recorder(store)
    entry = record(
        action=AuditAction.CUSTOMER_UNMASK,
        role=Role.ADMIN,
        target=CUSTOMER,
        outcome=AuditOutcome.ALLOWED,
        detail={"fields": "email,phone", "count": 2, "masked": False},
    )
    bare = log.record(actor="arn:aws:iam::123456789012:role/Ops", action=AuditAction.SIGN_IN, source_ip=None)
    page = log.entries(T0, T0 + timedelta(minutes=1))
    assert page.entries == [bare, entry] and page.cursor is None


def test_the_same_id_is_written_once(dynamodb: Any) -> None:
    store = _dynamo(dynamodb)
    log, record = _recorder(store)
    entry = record()
    assert store.append(entry) is False
    assert store.append(entry.model_copy(update={"actor": "someone-else"})) is False  # never overwritten
    items = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": keys.audit_day_pk(T0.date())}},
    )["Items"]
    assert len(items) == 1 and items[0]["actor"] == {"S": "sato"}
    assert int(items[0]["expires_at"]["N"]) == int((entry.at + timedelta(days=400)).timestamp())
    assert log.entries(T0, T0 + timedelta(days=1)).entries == [entry]


def test_a_range_across_two_days_comes_newest_first_in_pages(store: AuditStore) -> None:
    log, record = _recorder(store)
    recorded = [record(detail={"n": n}) for n in range(5)]  # 23:59:58 .. 00:00:02
    assert {e.at.date() for e in recorded} == {T0.date(), T0.date() + timedelta(days=1)}
    since, until = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = log.entries(since, until, limit=2, cursor=cursor)
        pages += 1
        seen += [int(e.detail["n"]) for e in page.entries]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [4, 3, 2, 1, 0] and pages == 3
    # The bounds: since inclusive, until exclusive.
    inner = log.entries(recorded[1].at, recorded[3].at).entries
    assert [e.id for e in inner] == [recorded[2].id, recorded[1].id]


def test_filters_by_actor_and_action_across_days(store: AuditStore) -> None:
    log, record = _recorder(store)
    a = record(actor="sato")
    record(actor="suzuki")
    c = record(actor="sato", action=AuditAction.CUSTOMER_VIEW, target=CUSTOMER)
    record(actor="suzuki", action=AuditAction.CUSTOMER_VIEW, target=CUSTOMER)
    e = record(actor="sato")
    day = timedelta(days=1)
    assert [x.id for x in log.entries(T0 - day, T0 + day, actor="sato").entries] == [e.id, c.id, a.id]
    page = log.entries(T0 - day, T0 + day, actor="sato", action=AuditAction.REPORT_VIEW, limit=1)
    assert page.entries == [e]
    rest = log.entries(
        T0 - day, T0 + day, actor="sato", action=AuditAction.REPORT_VIEW, limit=1, cursor=page.cursor
    )
    assert rest.entries == [a]


def test_a_query_is_one_query_per_day_and_never_a_scan(dynamodb: Any) -> None:
    store = _dynamo(dynamodb)
    log, record = _recorder(store)
    for n in range(5):
        record(detail={"n": n})
    counter = MotoRequests(key_schemas(template_tables()))
    with counter.counting():
        page = log.entries(T0 - timedelta(days=1), T0 + timedelta(days=1), limit=10)
    assert len(page.entries) == 5 and page.cursor is None
    operations = counter.by_operation("")
    # Three UTC days (29 April: empty, 30 April, 1 May): one Query each.
    assert operations == {"dynamodb:Query": 3}, operations
    with counter.counting():
        counter.requests.clear()
        first = log.entries(T0 - timedelta(days=1), T0 + timedelta(days=1), limit=2)
    # A page found in the newest day stops there: one request, however long the range.
    assert [int(e.detail["n"]) for e in first.entries] == [4, 3]
    assert counter.by_operation("") == {"dynamodb:Query": 1}


def test_entries_expire_after_the_configured_retention(dynamodb: Any) -> None:
    store = DynamoAuditStore(TABLE, dynamodb, retention=timedelta(days=30))
    clock.freeze(T0)
    entry = AuditLog(store).record(actor="sato", action=AuditAction.SIGN_IN, source_ip="203.0.113.7")
    item = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": keys.audit_day_pk(T0.date())}, "sk": {"S": entry.key}}
    )
    assert int(item["Item"]["expires_at"]["N"]) == int((T0 + timedelta(days=30)).timestamp())
