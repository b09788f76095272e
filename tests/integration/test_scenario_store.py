"""JourneysTable stores under moto, what only they do: versions read back without the cache,
rollbacks, concurrent uploads, the due index's shards and pages, cap periods and their TTL. What the
in-memory stores must do alike (created once, stale revisions refused, caps at the limit, S3 events
applied once) is the contract suite's, tests/integration/test_journeys_contract.py."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.journeys import (
    CAP_TTL_MARGIN,
    DUE_INDEX,
    EnrolmentStore,
    JourneyStores,
    ScenarioStore,
)
from cems.models import Channel
from cems.scenario.model import ChannelCap, Scenario
from cems.scenario.records import Enrolment, ScenarioSource
from cems.settings import Settings
from cems.wiring import journey_stores

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday


def _document(file: str = "line_welcome.json", **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / file).read_text(encoding="utf-8"))
    document.update(changes)
    return document


def _scenario(document: dict[str, Any]) -> Scenario:
    return Scenario.model_validate(document)


@pytest.fixture
def journeys(dynamodb: Any) -> JourneyStores:
    clock.freeze(NOW)
    return journey_stores(dynamodb, Settings({"JOURNEYS_TABLE": TABLE, "CEMS_DUE_SHARDS": "4"}))


# -- versions ---------------------------------------------------------------------------------------


def test_versions_are_numbered_and_the_latest_is_active(journeys: JourneyStores) -> None:
    store = journeys.scenarios
    first = _document()
    second = _document(name="LINE welcome v2")
    one = store.put_version(_scenario(first), first, ScenarioSource("scenarios/line-welcome.json", "e1"))
    two = store.put_version(_scenario(second), second, ScenarioSource("scenarios/line-welcome.json", "e2"))
    assert (one.result, one.version, two.result, two.version) == ("created", 1, "created", 2)
    state = store.active("line-welcome")
    assert state is not None and state.is_active and (state.version, state.latest) == (2, 2)
    assert store.versions("line-welcome") == [1, 2]
    # Both versions are kept: running enrolments finish on the one they started on.
    fresh = ScenarioStore(TABLE, store.client)  # no cache: read from the table
    v1 = fresh.version("line-welcome", 1)
    assert v1 is not None and v1.scenario.name == first["name"] and v1.source is not None
    assert v1.source.etag == "e1"
    active = fresh.active_version("line-welcome")
    assert active is not None and active.version == 2 and active.scenario.name == "LINE welcome v2"
    assert fresh.version("line-welcome", 3) is None


def test_the_scenarios_index_lists_active_scenarios_only(journeys: JourneyStores) -> None:
    store = journeys.scenarios
    welcome, cart = _document(), _document("cart_abandonment.json")
    store.put_version(_scenario(welcome), welcome, ScenarioSource("scenarios/line-welcome.json", "a"))
    store.put_version(_scenario(cart), cart, ScenarioSource("scenarios/cart-abandonment.json", "b"))
    summaries = {s.scenario_id: s for s in store.active_summaries()}
    assert set(summaries) == {"line-welcome", "cart-abandonment"}
    assert summaries["cart-abandonment"].trigger_type == "event"
    assert summaries["cart-abandonment"].event == "Product Added"
    assert summaries["line-welcome"].trigger_type == "line_follow"
    assert summaries["line-welcome"].event is None

    assert store.stop("cart-abandonment")
    assert not store.stop("cart-abandonment")  # nothing left to stop
    assert not store.stop("never-uploaded")
    assert [s.scenario_id for s in store.active_summaries()] == ["line-welcome"]
    state = store.active("cart-abandonment")
    assert state is not None and state.state == "stopped" and state.version == 1
    assert store.active_version("cart-abandonment") is None
    assert store.version("cart-abandonment", 1) is not None  # kept for enrolments still running


def test_scenarios_stopped_before_markers_are_adopted_once(journeys: JourneyStores, dynamodb: Any) -> None:
    """A stage stopped a scenario before stop wrote markers (its summary was deleted): tick's upkeep
    finds it through RPTINDEX (it counted enrolments) and its `stopped` pointer, and writes the marker,
    so its running journeys are in play again; nothing else is touched, and a second run writes nothing."""
    from cems.adapters.dynamodb import keys
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.reports.counters import Metric, ReportCell

    store = journeys.scenarios
    welcome, cart = _document(), _document("cart_abandonment.json")
    store.put_version(_scenario(welcome), welcome, ScenarioSource("scenarios/line-welcome.json", "a"))
    store.put_version(_scenario(cart), cart, ScenarioSource("scenarios/cart-abandonment.json", "b"))
    counters = ReportCounters(TABLE, dynamodb)
    for scenario_id in ("line-welcome", "cart-abandonment", "counted-but-never-uploaded"):
        counters.add(ReportCell(scenario_id, 1), Metric.ENROLLED)
    assert store.stop("cart-abandonment")
    # As an older stop left it: no summary, no marker.
    dynamodb.delete_item(TableName=TABLE, Key=keys.scenario_summary_key("cart-abandonment"))
    assert [s for s, _ in store.scenarios_in_play()] == ["line-welcome"]

    assert store.mark_stopped_before_markers() == 1
    assert sorted(store.scenarios_in_play()) == [("cart-abandonment", 1), ("line-welcome", 1)]
    assert [s.scenario_id for s in store.active_summaries()] == ["line-welcome"]
    assert store.mark_stopped_before_markers() == 0


def test_a_rollback_activates_an_older_version(journeys: JourneyStores) -> None:
    store = journeys.scenarios
    for n in range(3):
        document = _document(name=f"welcome {n}")
        store.put_version(_scenario(document), document, ScenarioSource("k", f"e{n}"))
    assert store.activate("line-welcome", 1)
    state = store.active("line-welcome")
    assert state is not None and (state.version, state.latest) == (1, 3)
    assert {s.version for s in store.active_summaries()} == {1}
    assert not store.activate("line-welcome", 9)
    # The next upload still gets a new number.
    document = _document(name="welcome 4")
    assert store.put_version(_scenario(document), document, ScenarioSource("k", "e4")).version == 4


class _AtomicCalls:
    """The client with each call atomic, as every DynamoDB request is (moto in-process is not
    thread-safe); threads still interleave between a read and its conditional write."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


def test_concurrent_uploads_never_share_a_version_number(dynamodb: Any) -> None:
    clock.freeze(NOW)
    store = ScenarioStore(TABLE, _AtomicCalls(dynamodb))
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def upload(n: int) -> None:
        document = _document(name=f"welcome {n}")
        try:
            barrier.wait()
            outcome = store.put_version(_scenario(document), document, ScenarioSource("k", f"etag-{n}"))
            results.append(outcome.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert store.versions("line-welcome") == [1, 2, 3, 4, 5, 6]
    state = store.active("line-welcome")
    assert state is not None and state.latest == 6


def test_a_lost_race_for_a_number_is_retried(
    journeys: JourneyStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between reading `latest` and writing, another upload takes the number: read again, take the next."""
    store = journeys.scenarios
    document = _document()
    store.put_version(_scenario(document), document, ScenarioSource("k", "e1"))
    real_active = store.active
    calls = {"n": 0}

    def stale_then_real(scenario_id: str) -> Any:
        calls["n"] += 1
        state = real_active(scenario_id)
        if calls["n"] == 1:
            # Someone else stores version 2 right after our read.
            other = _document(name="other")
            monkeypatch.setattr(store, "active", real_active)
            store.put_version(_scenario(other), other, ScenarioSource("k", "other"))
            monkeypatch.setattr(store, "active", stale_then_real)
        return state

    monkeypatch.setattr(store, "active", stale_then_real)
    mine = _document(name="mine")
    outcome = store.put_version(_scenario(mine), mine, ScenarioSource("k", "mine"))
    assert (outcome.result, outcome.version) == ("created", 3)
    assert store.versions("line-welcome") == [1, 2, 3]


# -- enrolments -------------------------------------------------------------------------------------


def _enrolment(customer: str = "cust-1", **changes: Any) -> Enrolment:
    values: dict[str, Any] = {
        "customer_id": customer,
        "scenario_id": "line-welcome",
        "version": 1,
        "step_id": "welcome",
        "entered_at": NOW,
        **changes,
    }
    return Enrolment(**values)


def test_a_write_on_a_stale_revision_loses(journeys: JourneyStores) -> None:
    store = journeys.enrolments
    store.create(_enrolment())
    first = store.get("cust-1", "line-welcome")
    second = store.get("cust-1", "line-welcome")
    assert first is not None and second is not None
    won = store.save(first.model_copy(update={"step_id": "new-friend-menu", "sends": 1}))
    assert won is not None and won.revision == 2
    # The second writer read revision 1 too: its write is refused, and it re-reads.
    assert store.save(second.model_copy(update={"step_id": "coupon"})) is None
    now = store.get("cust-1", "line-welcome")
    assert now is not None and (now.step_id, now.sends, now.revision) == ("new-friend-menu", 1, 2)
    assert not store.set_due("cust-1", "line-welcome", NOW, revision=1)
    assert store.set_due("cust-1", "line-welcome", NOW, revision=2)


def test_the_due_index_is_sparse_and_sharded(journeys: JourneyStores, dynamodb: Any) -> None:
    store = journeys.enrolments
    customers = [f"cust-{n}" for n in range(40)]
    for n, customer in enumerate(customers):
        # Every other one waits for a time; the rest are not waiting (no due attributes at all).
        due = NOW + timedelta(hours=n - 20) if n % 2 == 0 else None
        store.create(_enrolment(customer, due_at=due))
    index_items = _all_index_items(dynamodb)
    assert len(index_items) == 20  # only the waiting ones are in the index
    shards = {item["due_shard"]["S"] for item in index_items}
    assert shards <= {"DUE#0", "DUE#1", "DUE#2", "DUE#3"} and len(shards) > 1
    # Each enrolment is in its customer's shard, the same every time.
    for item in index_items:
        customer = item["pk"]["S"].removeprefix("ENR#")
        assert item["due_shard"]["S"] == f"DUE#{store.shard_of(customer)}"
    assert EnrolmentStore(TABLE, dynamodb, 4).shard_of("cust-7") == store.shard_of("cust-7")

    due_now = sorted(k.customer_id for k in store.iter_due(NOW, page_size=3))
    expected = sorted(c for n, c in enumerate(customers) if n % 2 == 0 and n <= 20)
    assert due_now == expected
    # One shard's query reads only that shard's due items, earliest first, page by page.
    shard = store.shard_of("cust-0")
    keys, cursor = [], None
    while True:
        page = store.query_due(shard, NOW, limit=2, start=cursor)
        assert len(page.keys) <= 2
        keys += page.keys
        cursor = page.cursor
        if cursor is None:
            break
    assert all(store.shard_of(k.customer_id) == shard and k.due_at <= NOW for k in keys)
    assert [k.due_at for k in keys] == sorted(k.due_at for k in keys)
    assert {k.customer_id for k in keys} == {c for c in expected if store.shard_of(c) == shard}


def test_clearing_due_takes_an_enrolment_out_of_the_index(journeys: JourneyStores, dynamodb: Any) -> None:
    store = journeys.enrolments
    created = store.create(_enrolment(due_at=NOW - timedelta(minutes=1)))
    assert created is not None
    assert [k.customer_id for k in store.iter_due(NOW)] == ["cust-1"]
    assert store.clear_due("cust-1", "line-welcome", revision=1)
    assert list(store.iter_due(NOW)) == []
    assert _all_index_items(dynamodb) == []
    got = store.get("cust-1", "line-welcome")
    assert got is not None and got.due_at is None and got.revision == 2
    # Saving with a due time puts it back; saving without takes it out again.
    back = store.save(got.model_copy(update={"due_at": NOW + timedelta(days=3)}))
    assert back is not None and back.revision == 3
    assert list(store.iter_due(NOW)) == []
    assert [k.customer_id for k in store.iter_due(NOW + timedelta(days=3))] == ["cust-1"]
    assert store.save(back.model_copy(update={"due_at": None})) is not None
    assert _all_index_items(dynamodb) == []


def _all_index_items(dynamodb: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE, IndexName=DUE_INDEX):
        items += page["Items"]
    return items


# -- frequency caps ---------------------------------------------------------------------------------


def test_cap_counters_are_keyed_by_tokyo_day_and_week_and_expire_after_them(
    journeys: JourneyStores, dynamodb: Any
) -> None:
    sunday_night = datetime(2026, 5, 3, 14, 59, tzinfo=UTC)  # Sun 23:59 JST: the day and the week end
    journeys.caps.try_consume("cust-1", Channel.LINE, ChannelCap(per_day=2, per_week=5), sunday_night)
    journeys.caps.try_consume("cust-1", Channel.LINE, ChannelCap(per_day=2, per_week=None), NOW)
    items = {i["sk"]["S"]: i for i in dynamodb.scan(TableName=TABLE)["Items"]}
    # The sort keys deployed stacks wrote their counters under (test_journeys_contract pins them too).
    assert sorted(items) == ["line#D#2026-05-01", "line#D#2026-05-03", "line#W#2026-W18"]
    ends = datetime(2026, 5, 3, 15, 0, tzinfo=UTC)  # Monday 00:00 in Tokyo
    assert int(items["line#D#2026-05-03"]["expires_at"]["N"]) == int((ends + CAP_TTL_MARGIN).timestamp())
    assert int(items["line#W#2026-W18"]["expires_at"]["N"]) == int((ends + CAP_TTL_MARGIN).timestamp())
    saturday = datetime(2026, 5, 1, 15, 0, tzinfo=UTC)  # the end of Friday 1 May in Tokyo
    assert int(items["line#D#2026-05-01"]["expires_at"]["N"]) == int((saturday + CAP_TTL_MARGIN).timestamp())


def test_the_engines_enrolment_model_round_trips(dynamodb: Any) -> None:
    from cems.scenario import engine

    clock.freeze(NOW)
    store = EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment)
    enrolment = engine.Enrolment(
        customer_id="cust-9",
        scenario_id="line-welcome",
        version=2,
        step_id="coupon",
        state=engine.EnrolmentState.WAITING,
        entered_at=NOW,
        due_at=NOW + timedelta(days=3),
        step_sends={"welcome": 1},
    )
    created = store.create(enrolment)
    assert created is not None and created.revision == 1
    got = store.get("cust-9", "line-welcome")
    assert got == created and isinstance(got, engine.Enrolment)
    assert [k.customer_id for k in store.iter_due(NOW + timedelta(days=3))] == ["cust-9"]
    saved = store.save(got.model_copy(update={"state": engine.EnrolmentState.COMPLETED, "due_at": None}))
    assert saved is not None and saved.revision == 2
    assert list(store.iter_due(NOW + timedelta(days=30))) == []
