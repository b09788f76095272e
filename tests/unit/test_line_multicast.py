"""A batch of the engine's dispatches as queued dispatches (cems.line.multicast, through the tests'
RecordingDispatchSink, which groups as QueueDispatchSink does): identical LINE content shared by up
to 500 recipients (more of one content in a batch refused) under a key a redo of the batch makes
again; personal content one each. And the sender's frozen plan over such keys: a redone batch
messages nobody twice, with fewer recipients, and messages once a customer its first attempt never had.
QueueDispatchSink itself on moto: tests/integration/test_dispatch_sink.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.engagement import uses_link_clicks
from cems.line.dispatch import LineDispatch
from cems.line.multicast import MAX_KEY_LENGTH, group, shareable
from cems.line.sender import CLAIM_LEASE, LineSender
from cems.models import Channel, ChannelState, MessageType, Profile, StoredEvent
from cems.reports.counters import Metric, ReportCell
from cems.scenario.engine import CapView, Dispatch, advance, enrol
from cems.scenario.model import Scenario
from cems.scenario.simulate import default_profile

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.line import Answer, InMemoryLineDeliveries, InMemoryLineGateway
from tests.fakes.scenario_io import InMemoryReportCounters, RecordingDispatchSink

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TEXT = {"type": "text", "text": "茶寮みどりです。新茶のセットが入荷しました。"}
BUTTONS = {
    "type": "template",
    "altText": "新茶のご案内",
    "template": {
        "type": "buttons",
        "text": "新茶のご案内",
        "actions": [{"type": "uri", "label": "見る", "uri": "https://shop.example.jp/shincha"}],
    },
}
BATCH = "spring-tea#r1#s03#p0007"


def customer_id(n: int) -> str:
    return f"cus_{n:06d}"


def dispatch(n: int, messages: list[dict[str, Any]] | None = None, **extra: Any) -> Dispatch:
    cid = customer_id(n)
    key = f"{cid}#spring-tea#v1#{extra.pop('step_id', 'announce')}#e1"
    fields: dict[str, Any] = {
        "key": key,
        "channel": "line",
        "customer_id": cid,
        "scenario_id": "spring-tea",
        "version": 1,
        "step_id": key.split("#")[3],
        "entry": 1,
        "per_customer_clicks": False,
        **extra,
    }
    if fields["channel"] == "line":
        fields.setdefault(
            "messages",
            {
                Channel.LINE: LineDispatch(
                    idempotency_key=key,
                    recipients=[cid],
                    messages=messages or [TEXT],
                    scenario_id="spring-tea",
                    version=1,
                    step_id=fields["step_id"],
                    variant=fields.get("variant"),
                )
            },
        )
    return Dispatch(**fields)


def test_identical_content_goes_as_one_dispatch_under_a_key_of_the_batch() -> None:
    sink = RecordingDispatchSink()
    results = sink.send_batch([dispatch(n) for n in range(500)], BATCH)
    assert results == ["enqueued"] * 500
    (body,) = sink.take_line()
    assert body["recipients"] == [customer_id(n) for n in range(500)]
    assert body["idempotency_key"].startswith(f"{BATCH}#announce#")
    assert body["idempotency_key"].endswith("#0000")
    assert body["messages"] == [TEXT] and body["step_id"] == "announce"
    # Every customer of this content in the batch: the sender may add one its plan never had.
    assert body["sole_chunk"] is True
    # The same batch again (a redo), with fewer customers or one more: the same key.
    again = RecordingDispatchSink()
    again.send_batch([dispatch(n) for n in range(100, 200)], BATCH)
    again.send_batch([dispatch(n) for n in range(1, 500)] + [dispatch(9999)], BATCH)
    assert [b["idempotency_key"] for b in again.take_line()] == [body["idempotency_key"]] * 2


def test_a_batch_with_more_than_500_customers_of_one_content_is_refused_whole() -> None:
    # A batch is at most one multicast per content (a broadcast page holds at most 500 profiles):
    # chunks would let a redo move a customer from one chunk's key to another's.
    sink = RecordingDispatchSink()
    with pytest.raises(ValueError, match="more than 500 customers of one shared content"):
        sink.send_batch([dispatch(n) for n in range(501)], BATCH)
    assert sink.take_line() == []
    # 500 customers of each of two contents, and a customer's repeated dispatch, are fine.
    mixed = [dispatch(n) for n in range(500)] + [dispatch(n, [BUTTONS]) for n in range(500)] + [dispatch(0)]
    assert [len(s.positions) for s in group(mixed, BATCH)] == [501, 500]
    with pytest.raises(ValueError, match="sole chunk"):
        LineDispatch(
            idempotency_key="k",
            recipients=[customer_id(n) for n in range(501)],
            messages=[TEXT],
            sole_chunk=True,
        )


def test_personal_content_goes_one_each_and_the_results_keep_the_batch_order() -> None:
    named = [dispatch(n, [{"type": "text", "text": f"{n}様、新茶が入荷しました"}]) for n in range(3)]
    mail = dispatch(10, channel="email", messages={})
    shared = [dispatch(n) for n in range(20, 23)]
    batch = [named[0], shared[0], mail, named[1], shared[1], named[2], shared[2]]
    sink = RecordingDispatchSink(queues=[Channel.LINE])
    results = sink.send_batch(batch, BATCH)
    # No email queue here, and the email dispatch has no message: unsupported, in its place.
    assert results == ["enqueued", "enqueued", "unsupported", "enqueued", "enqueued", "enqueued", "enqueued"]
    bodies = sink.take_line()
    assert [b["recipients"] for b in bodies] == [
        [customer_id(0)],
        [customer_id(20), customer_id(21), customer_id(22)],
        [customer_id(1)],
        [customer_id(2)],
    ]
    # Personal content is keyed by its content (a redo renders it alike), never by the group's size.
    assert all(b["idempotency_key"].startswith(f"{BATCH}#announce#") for b in bodies)


def test_cells_and_quiet_delivery_split_groups() -> None:
    quiet = dispatch(3)
    line = quiet.messages[Channel.LINE].model_copy(update={"notification_disabled": True})
    quiet = quiet.model_copy(update={"messages": {Channel.LINE: line}})
    batch = [
        dispatch(0),
        dispatch(1, variant="b"),
        dispatch(2, step_id="remind"),
        quiet,
        dispatch(4, version=2),
        dispatch(5),
    ]
    shares = group(batch, BATCH)
    assert [s.positions for s in shares] == [(0, 5), (1,), (2,), (3,), (4,)]
    assert len({s.key for s in shares}) == 5


def test_links_tracked_per_customer_keep_a_dispatch_to_itself() -> None:
    # The scenario's conditions use clicks and the message has a link: its own key, alone.
    personal = [dispatch(n, [BUTTONS], per_customer_clicks=True) for n in range(3)]
    assert not any(shareable(d) for d in personal)
    shares = group(personal, BATCH)
    assert [s.key for s in shares] == [None, None, None]
    sink = RecordingDispatchSink()
    sink.send_batch(personal, BATCH)
    assert [b["idempotency_key"] for b in sink.take_line()] == [d.key for d in personal]
    # Without a link, or with click tracking off, or when no condition uses clicks: shared.
    assert shareable(dispatch(0, per_customer_clicks=True))
    assert shareable(dispatch(0, [BUTTONS], per_customer_clicks=True, track_clicks=False))
    assert shareable(dispatch(0, [BUTTONS], per_customer_clicks=False))


def test_a_long_batch_name_still_makes_a_key_line_accepts() -> None:
    (share,) = group([dispatch(0), dispatch(1)], "b" * 300)
    assert share.key is not None and len(share.key) <= MAX_KEY_LENGTH
    assert group([dispatch(0), dispatch(1)], "b" * 300)[0].key == share.key
    with pytest.raises(ValueError, match="batch"):
        group([dispatch(0)], "")


# -- the engine says when clicks must name the customer ----------------------------------------


def _scenario(**fields: Any) -> Scenario:
    data: dict[str, Any] = {
        "id": "spring-tea",
        "name": "spring tea",
        "trigger": {"type": "event", "event": "Product Added"},
        "steps": [{"id": "announce", "type": "send", "channel": "line", "line": [BUTTONS]}],
        **fields,
    }
    return Scenario.model_validate(data)


@pytest.mark.parametrize(
    ("fields", "needed"),
    [
        ({}, False),
        ({"goal": {"event": "Link Clicked", "within": "7d"}}, True),
        (
            {
                "steps": [
                    {"id": "announce", "type": "send", "channel": "line", "line": [BUTTONS]},
                    {"id": "clicked", "type": "wait_for_event", "event": "Link Clicked", "timeout": "3d"},
                ]
            },
            True,
        ),
        ({"goal": {"event": "Order Completed", "within": "7d"}}, False),
        # A response is any event after a send, a click included.
        ({"exit": {"no_response_after_sends": 2}}, True),
    ],
)
def test_the_engine_marks_dispatches_of_scenarios_whose_conditions_use_clicks(
    fields: dict[str, Any], needed: bool
) -> None:
    scenario = _scenario(**fields)
    assert uses_link_clicks(scenario) is needed
    profile = default_profile("cus_1", NOW - timedelta(days=30))
    trigger_name = "Product Added"
    trigger = StoredEvent(
        customer_id="cus_1",
        site_id="shop",
        type=MessageType.TRACK,
        message_id="m-1",
        event=trigger_name,
        timestamp=NOW,
        received_at=NOW,
    )
    decision = enrol(scenario, 1, profile, trigger, None, NOW)
    assert decision.enrolment is not None
    (sent,) = advance(scenario, decision.enrolment, profile, [], NOW, CapView()).dispatches
    assert sent.per_customer_clicks is needed


# -- the sender over shared keys: a redo messages nobody twice ---------------------------------


class World:
    def __init__(self, customers: int) -> None:
        self.customers = InMemoryCustomers()
        self.deliveries = InMemoryLineDeliveries()
        self.line = InMemoryLineGateway()
        self.counters = InMemoryReportCounters()
        self.sender = LineSender(
            self.customers, self.deliveries, self.line, retry_base_seconds=1, counters=self.counters
        )
        for n in range(customers):
            state = ChannelState(reachable=True, consent=True, updated_at=NOW)
            self.customers.put_profile(
                Profile(
                    customer_id=customer_id(n),
                    line_user_id=f"U{n:032x}",
                    channels={"line": state},
                    first_seen_at=NOW,
                    updated_at=NOW,
                )
            )

    def deliver(self, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            self.sender.handle(json.dumps(body))


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


def test_a_redone_batch_with_fewer_recipients_messages_nobody_twice(frozen: None) -> None:
    world = World(500)
    first = RecordingDispatchSink()
    first.send_batch([dispatch(n) for n in range(500)], BATCH)
    world.deliver(first.take_line())
    assert len(world.line.calls) == 1
    # The redo: the journeys of some were written before the worker stopped, so fewer come again.
    redo = RecordingDispatchSink()
    redo.send_batch([dispatch(n) for n in range(300, 500, 2)], BATCH)
    world.deliver(redo.take_line())
    assert len(world.line.calls) == 1
    assert sorted(world.line.received) == sorted(f"U{n:032x}" for n in range(500))
    assert all(len(m) == 1 for m in world.line.received.values())
    cell = ReportCell("spring-tea", 1, "announce", None)
    assert world.counters.count(cell, Metric.SENT) == 500


def test_a_redone_batch_with_a_customer_the_first_attempt_never_saw_messages_them_once(frozen: None) -> None:
    # The worker enqueued the page and stopped before writing the journeys; meanwhile a profile was
    # created inside the page's key range (cus_000250), so the redo's page holds it too, and fewer
    # of the others (its page still ends at 500 profiles, or some journeys had been written).
    world = World(500)
    new = 250
    first = RecordingDispatchSink()
    first.send_batch([dispatch(n) for n in range(500) if n != new], BATCH)
    world.deliver(first.take_line())
    redo = RecordingDispatchSink()
    redo.send_batch([dispatch(n) for n in range(0, 499)], BATCH)
    bodies = redo.take_line()
    for _delivery in range(3):  # each body delivered again, and the first attempt's body too
        world.deliver(bodies)
        world.deliver(first.bodies[Channel.LINE])
    # One multicast to the 499, one push to the new customer under a retry key of its own unit.
    assert [(c.kind.value, len(c.to)) for c in world.line.calls] == [("multicast", 499), ("push", 1)]
    assert len({c.retry_key for c in world.line.calls}) == 2
    assert sorted(world.line.received) == sorted(f"U{n:032x}" for n in range(500))
    assert all(len(m) == 1 for m in world.line.received.values())
    key = bodies[0]["idempotency_key"]
    outcomes = world.deliveries.outcomes(key)
    assert len(outcomes) == 500 and set(outcomes.values()) == {"sent"}
    assert world.deliveries.state(key).recipients[customer_id(new)].unit_id == "x01m0000"
    assert world.counters.count(ReportCell("spring-tea", 1, "announce", None), Metric.SENT) == 500


def test_mixed_personal_and_identical_content_under_redelivery_and_faults_messages_each_once(
    frozen: None,
) -> None:
    world = World(40)
    # Two steps of one page: an identical announcement, and a personal greeting for some.
    batch = [dispatch(n) for n in range(30)] + [
        dispatch(n, [{"type": "text", "text": f"{n}様、いつもありがとうございます"}], step_id="thanks")
        for n in range(30, 40)
    ]
    world.line.answer_next(Answer(429), Answer(500), Answer(503), Answer(200, lost_after_accepting=True))
    for _ in range(2):  # the page done twice (a redo), each body delivered three times
        sink = RecordingDispatchSink()
        sink.send_batch(batch, BATCH)
        bodies = sink.take_line()
        assert len(bodies) == 11  # one multicast dispatch and ten pushes
        for _delivery in range(3):
            clock.advance(CLAIM_LEASE.total_seconds() + 600)
            world.deliver(bodies)
    assert sorted(world.line.received) == sorted(f"U{n:032x}" for n in range(40))
    assert all(len(m) == 1 for m in world.line.received.values())
    assert world.counters.count(ReportCell("spring-tea", 1, "announce", None), Metric.SENT) == 30
    assert world.counters.count(ReportCell("spring-tea", 1, "thanks", None), Metric.SENT) == 10
