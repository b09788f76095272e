"""The LINE sender's rules on in-memory ports (tests/fakes; the claims are held to the Deliveries
table's contract by tests/integration/test_sender_stores_contract.py): each LINE call made once
however often a dispatch comes, retries under the same retry key, LINE's refusals and limits, who is
skipped, the frozen plan. The send_line handler (SQS batches, visibility, metrics) is tested under
moto in tests/integration/test_send_line.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cems import clock
from cems.line.deliveries import UnitStatus, retry_key
from cems.line.dispatch import LineDispatch
from cems.line.sender import CLAIM_LEASE, MONTHLY_LIMIT_MESSAGE, LineSender, make_plan
from cems.models import ChannelState, Profile
from cems.reports.counters import Metric, ReportCell

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.line import Answer, InMemoryLineDeliveries, InMemoryLineGateway
from tests.fakes.scenario_io import InMemoryReportCounters

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TEXT = {"type": "text", "text": "茶寮みどりです。新茶のセットが入荷しました。"}


def line_user_id(n: int) -> str:
    return f"U{n:032x}"


class LineWorld:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.deliveries = InMemoryLineDeliveries()
        self.line = InMemoryLineGateway()
        self.counters = InMemoryReportCounters()
        self.sender = self.another_sender()

    def another_sender(self) -> LineSender:
        """A sender in another execution environment (its own monthly-limit pause)."""
        return LineSender(
            self.customers, self.deliveries, self.line, retry_base_seconds=1, counters=self.counters
        )

    def customer(self, n: int, *, reachable: bool = True, consent: bool = True) -> str:
        customer_id = f"cus_{n:06d}"
        state = ChannelState(reachable=reachable, consent=consent, updated_at=clock.now())
        self.customers.put_profile(
            Profile(
                customer_id=customer_id,
                line_user_id=line_user_id(n),
                channels={"line": state},
                first_seen_at=NOW,
                updated_at=clock.now(),
            )
        )
        return customer_id

    def outcomes(self, key: str) -> dict[str, str]:
        return self.deliveries.outcomes(key)

    def received(self) -> dict[str, int]:
        return {user: len(messages) for user, messages in self.line.received.items()}


@pytest.fixture
def world() -> Iterator[LineWorld]:
    clock.freeze(NOW)
    yield LineWorld()
    clock.reset()


def dispatch(key: str, recipients: list[str], **extra: Any) -> str:
    return LineDispatch.model_validate(
        {"idempotency_key": key, "recipients": recipients, "messages": [TEXT], **extra}
    ).to_sqs_body()


def test_the_same_dispatch_handled_three_times_calls_line_once(world: LineWorld) -> None:
    body = dispatch("thrice", [world.customer(n) for n in (1, 2, 3)])
    reports = [world.sender.handle(body, receive_count=n) for n in (1, 2, 3)]
    assert [r.api_calls for r in reports] == [1, 0, 0]
    assert [r.already_done for r in reports] == [0, 1, 1]
    assert len(world.line.calls) == 1
    assert world.received() == {line_user_id(n): 1 for n in (1, 2, 3)}
    assert set(world.outcomes("thrice").values()) == {"sent"}


def test_a_429_storm_then_recovery_loses_nothing_and_duplicates_nothing(world: LineWorld) -> None:
    many = [world.customer(n) for n in range(1, 1201)]
    personal = [world.customer(n) for n in (2001, 2002, 2003)]
    bodies = [
        dispatch("storm-multicast", many),
        LineDispatch.model_validate(
            {
                "idempotency_key": "storm-personal",
                "recipients": personal,
                "personalised": {c: [{"type": "text", "text": f"{c} 様へ"}] for c in personal},
            }
        ).to_sqs_body(),
    ]
    world.line.answer_next(*[Answer(429, '{"message":"Too Many Requests"}')] * 5)
    pending = list(bodies)
    rounds = 0
    while pending:
        rounds += 1
        assert rounds < 10
        reports = {body: world.sender.handle(body, receive_count=rounds) for body in pending}
        # A dispatch with a unit to retry asks to come back later (SQS backoff), not at once.
        pending = [body for body, report in reports.items() if report.retry_after is not None]
        assert all(r.retries == 0 or r.retry_after for r in reports.values())
    assert len(world.line.received) == 1203
    assert set(world.received().values()) == {1}
    assert world.line.received[line_user_id(2002)] == [{"type": "text", "text": "cus_002002 様へ"}]
    accepted = [c for c in world.line.calls if c.answered.status is UnitStatus.SENT]
    assert sorted(c.kind.value for c in accepted) == ["multicast"] * 3 + ["push"] * 3
    assert len([c for c in world.line.calls if c.answered.http_status == 429]) == 5
    assert set(world.outcomes("storm-multicast").values()) == {"sent"}
    assert set(world.outcomes("storm-personal").values()) == {"sent"}


def test_a_retry_reuses_each_units_retry_key(world: LineWorld) -> None:
    body = dispatch("same-key", [world.customer(n) for n in (1, 2)])
    world.line.answer_next(Answer(500))
    first = world.sender.handle(body)
    assert first.retries == 1 and first.retry_after is not None
    assert world.sender.handle(body, receive_count=2).sent == 2
    assert [c.retry_key for c in world.line.calls] == [retry_key("same-key", "m0000")] * 2
    assert [c.answered.http_status for c in world.line.calls] == [500, 200]


def test_a_400_is_recorded_with_lines_message_and_not_retried(world: LineWorld) -> None:
    recipients = [world.customer(n) for n in (1, 2)]
    body = dispatch("bad-request", recipients)
    message = "The property, 'messages[0].text', in the request body is invalid"
    world.line.answer_next(Answer(400, f'{{"message":"{message}"}}'))
    report = world.sender.handle(body)
    assert report.failed == 2 and report.retry_after is None
    # Handled again anyway: the failed unit is final, LINE is not called again.
    assert world.sender.handle(body).already_done == 1
    assert len(world.line.calls) == 1 and world.line.received == {}
    records = world.deliveries.state("bad-request").recipients
    assert {r.status.value for r in records.values()} == {"failed"}
    assert "messages[0].text" in (records[recipients[0]].reason or "")


def test_an_unfollowed_user_receives_nothing_and_a_lone_recipient_is_a_push(world: LineWorld) -> None:
    following = world.customer(1)
    unfollowed = world.customer(2, reachable=False)
    no_consent = world.customer(3, consent=False)
    world.sender.handle(dispatch("unfollowed", [following, unfollowed, no_consent, "cus_nobody"]))
    assert set(world.line.received) == {line_user_id(1)}
    assert world.outcomes("unfollowed") == {
        following: "sent",
        unfollowed: "skipped_unreachable",
        no_consent: "skipped_no_consent",
        "cus_nobody": "skipped_unreachable",
    }
    assert [c.kind.value for c in world.line.calls] == ["push"]


def test_1200_identical_recipients_take_exactly_3_multicast_calls(world: LineWorld) -> None:
    recipients = [world.customer(n) for n in range(1, 1201)]
    world.sender.handle(dispatch("twelve-hundred", recipients))
    assert [(c.kind.value, len(c.to)) for c in world.line.calls] == [
        ("multicast", 500),
        ("multicast", 500),
        ("multicast", 200),
    ]
    assert len(world.line.received) == 1200


def test_the_monthly_limit_defers_this_and_the_next_dispatch_without_calling_line_again(
    world: LineWorld,
) -> None:
    monthly, other = (
        dispatch("monthly", [world.customer(1), world.customer(2)]),
        dispatch("monthly-2", [world.customer(3)]),
    )
    world.line.answer_next(Answer(429, f'{{"message":"{MONTHLY_LIMIT_MESSAGE}"}}'))
    first, second = world.sender.handle(monthly), world.sender.handle(other)
    assert (first.monthly_limit_hits, second.monthly_limit_hits) == (1, 0)
    assert first.retry_after == second.retry_after == 3600
    assert len(world.line.calls) == 1
    assert set(world.outcomes("monthly").values()) == {"deferred"}
    assert set(world.outcomes("monthly-2").values()) == {"deferred"}
    # The next month (or a bigger plan): a new execution environment sends them.
    fresh = world.another_sender()
    assert fresh.handle(monthly).sent == 2 and fresh.handle(other).sent == 1
    assert set(world.line.received) == {line_user_id(n) for n in (1, 2, 3)}
    assert set(world.outcomes("monthly").values()) == {"sent"}


def test_a_call_lost_after_line_accepted_it_is_counted_once_through_409(world: LineWorld) -> None:
    body = dispatch("lost-answer", [world.customer(n) for n in (1, 2)])
    world.line.answer_next(Answer(lost_after_accepting=True))
    assert world.sender.handle(body).retries == 1
    assert world.sender.handle(body, receive_count=2).sent == 2
    assert [c.answered.http_status for c in world.line.calls] == [None, 409]
    assert set(world.received().values()) == {1}
    assert set(world.outcomes("lost-answer").values()) == {"sent"}


def test_a_retry_with_a_changed_audience_keeps_the_frozen_plan(world: LineWorld) -> None:
    for n in range(1, 603):
        world.customer(n)
    first = [f"cus_{n:06d}" for n in range(1, 602)]
    world.line.answer_next(Answer(503))  # the first chunk fails, the second goes through
    assert world.sender.handle(dispatch("frozen", first)).retries == 1
    # The producer enqueues the dispatch again with a different audience under the same key.
    changed = [f"cus_{n:06d}" for n in range(2, 603)]
    report = world.sender.handle(dispatch("frozen", changed), receive_count=2)
    assert report.content_mismatch
    accepted = [c for c in world.line.calls if c.answered.status is UnitStatus.SENT]
    assert [c.retry_key for c in accepted] == [retry_key("frozen", "m0001"), retry_key("frozen", "m0000")]
    assert [len(c.to) for c in accepted] == [101, 500]
    assert line_user_id(1) in world.line.received and line_user_id(602) not in world.line.received
    assert set(world.received().values()) == {1}


def test_an_unfollow_between_attempts_is_respected(world: LineWorld) -> None:
    stays, leaves = world.customer(1), world.customer(2)
    body = dispatch("unfollow-later", [stays, leaves])
    world.line.answer_next(Answer(429))
    assert world.sender.handle(body).retries == 1
    world.customer(2, reachable=False)
    world.sender.handle(body, receive_count=2)
    assert set(world.line.received) == {line_user_id(1)}
    assert world.outcomes("unfollow-later") == {stays: "sent", leaves: "skipped_unreachable"}


def test_concurrent_deliveries_call_line_once(world: LineWorld) -> None:
    body = dispatch("concurrent", [world.customer(n) for n in range(1, 6)])
    start = threading.Barrier(4)
    results: list[Any] = []

    def deliver() -> None:
        start.wait()
        results.append(world.another_sender().handle(body))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert len([c for c in world.line.calls if c.answered.status is UnitStatus.SENT]) == 1
    assert set(world.received().values()) == {1}
    # The others found the unit final, or held by the winner (and come back after its lease).
    assert sum(r.api_calls for r in results) == 1


def test_a_claim_whose_worker_died_is_taken_again_after_its_lease(world: LineWorld) -> None:
    body = dispatch("died", [world.customer(n) for n in (1, 2)])
    parsed = LineDispatch.model_validate_json(body)
    plan = make_plan(parsed, world.customers.profiles(parsed.recipients))
    assert world.deliveries.create_plan(plan)
    (unit,) = plan.units
    held = world.deliveries.claim("died", unit, CLAIM_LEASE)  # a worker that then dies
    busy = world.sender.handle(body)
    assert busy.api_calls == 0 and busy.retry_after == int(CLAIM_LEASE.total_seconds())
    clock.advance(CLAIM_LEASE.total_seconds() + 1)
    assert world.sender.handle(body).sent == 2
    assert held.token is not None
    assert not world.deliveries.finish("died", unit, held.token, UnitStatus.SENT)  # its claim was lost


def test_scenario_sends_are_counted_once_per_recipient_however_often_handled(world: LineWorld) -> None:
    recipients = [world.customer(1), world.customer(2, reachable=False)]
    body = dispatch("counted", recipients, scenario_id="welcome", version=2, step_id="hello")
    for n in (1, 2, 3):
        world.sender.handle(body, receive_count=n)
    cell = ReportCell("welcome", 2, "hello")
    assert world.counters.count(cell, Metric.SENT) == 1
    assert world.counters.count(cell, Metric.SUPPRESSED) == 1
