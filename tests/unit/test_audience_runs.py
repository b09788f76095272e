"""Fanned-out audience counts (cems.console.audience_runs) on the in-memory fakes: a run counts what
the count answered at once counts, and what a broadcast of the same scenario enrols; segments handed
on, redelivered, or counted by two workers at once are counted once; progress and completion; when a
count is answered at once and when it becomes a run. Through the handlers under moto:
tests/integration/test_audience_runs.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from cems import clock
from cems.console.audience import AudienceCount, AudienceCounter
from cems.console.audience_runs import RUN_TTL, STALLED_AFTER, AudienceRuns, AudienceSegmentCounter
from cems.ports import ServiceUnavailable
from cems.scenario.broadcast import BroadcastWorker, SegmentMessage

from tests.fakes.audience_runs import InMemoryAudienceRuns
from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.unit.test_audience_count import AT, CUSTOMERS, DOCUMENT, SEGMENTS, World

BIG = 10**9  # a size estimate above any threshold: every count a run
PAGE = 15


class _Size:
    def __init__(self, items: int) -> None:
        self.items = items

    def approximate_items(self) -> int:
        return self.items


class Runs:
    """A world with customers, the runs service and the broadcast worker that counts their segments."""

    def __init__(self, world: World, items: int = BIG, counter: AudienceCounter | None = None) -> None:
        self.world = world
        self.store = InMemoryAudienceRuns()
        self.queue = InMemoryQueue()
        self.service = AudienceRuns(
            counter or world.counter, self.store, self.queue, _Size(items), new_id=lambda: "a" * 32
        )
        self.counts = AudienceSegmentCounter(
            world.runner.entrance, world.customers, self.store, self.queue, page_size=PAGE
        )
        self.worker = BroadcastWorker(
            world.runner,
            InMemoryBroadcastStore(),
            world.customers,
            self.queue,
            page_size=PAGE,
            counts=self.counts,
        )

    def start(self) -> AudienceCount:
        scenario = self.world.upload(DOCUMENT)
        return self.service.count(scenario, json.dumps(DOCUMENT), started_by="op-analyst", time_budget_s=20)

    def work(self, remaining_ms: Callable[[], int] | None = None, redeliver: bool = False) -> list[str]:
        """Every message on the queue to the worker until none is left (each twice with `redeliver`):
        the outcomes."""
        outcomes: list[str] = []
        while bodies := self.queue.take():
            for body in bodies * (2 if redeliver else 1):
                message = SegmentMessage.model_validate_json(body)
                outcomes.append(
                    self.worker.run_segment(message, remaining_ms or partial(int, 60_000)).outcome
                )
        return outcomes


@pytest.fixture
def world() -> Iterator[World]:
    clock.freeze(AT)
    created = World()
    for n in range(CUSTOMERS):
        created.shopper(n)
    yield created
    clock.reset()


def _counts(count: AudienceCount) -> dict[str, Any]:
    """What a count found, without what it took or how it was run."""
    return count.model_dump(
        mode="json", exclude={"requests", "elapsed_ms", "run", "segments_done", "note", "complete"}
    )


def test_a_fanned_out_count_equals_the_count_at_once_and_what_the_broadcast_enrols(world: World) -> None:
    at_once = world.counter.count(world.upload(DOCUMENT), now=AT)
    runs = Runs(world)

    started = runs.start()
    assert started.run == "a" * 32 and not started.complete
    assert (started.segments, started.segments_done, started.matching) == (SEGMENTS, 0, 0)
    assert len(runs.queue.bodies) == SEGMENTS
    assert all(SegmentMessage.model_validate_json(b).kind == "count" for b in runs.queue.bodies)
    assert set(runs.work()) == {"done"}

    finished = runs.service.status(started.run)
    assert finished is not None and finished.complete and finished.segments_done == SEGMENTS
    assert finished.note is None and finished.requests is None
    assert _counts(finished) == _counts(at_once) and at_once.matching > 0
    # The run counts; the broadcast, run afterwards, enrols exactly those customers.
    world.broadcast()
    enrolled = [e for e in world.enrolments.enrolments.values() if e.scenario_id == DOCUMENT["id"]]
    assert len(enrolled) == finished.matching
    assert sum(e.holdout for e in enrolled) == finished.holdout


def test_segments_handed_on_after_every_page_and_redelivered_are_counted_once(world: World) -> None:
    at_once = world.counter.count(world.upload(DOCUMENT), now=AT)
    runs = Runs(world)
    run = runs.start().run
    assert run is not None

    # No time left after any page: each segment is counted a page an invocation, handed on each
    # time; and every message is delivered twice (the second finds its pages written already).
    outcomes = runs.work(remaining_ms=partial(int, 0), redeliver=True)

    assert outcomes.count("continued") > SEGMENTS  # several pages a segment
    finished = runs.service.status(run)
    assert finished is not None and finished.complete
    assert _counts(finished) == _counts(at_once)
    assert sum(s.pages for s in runs.store.segments(run)) == runs.store.writes


def test_two_workers_on_one_segment_count_it_once(world: World) -> None:
    runs = Runs(world)
    run = runs.start().run
    assert run is not None
    message = SegmentMessage.model_validate_json(runs.queue.take()[0])
    stored = runs.store.segment(run, message.segment)
    assert stored is None
    # A second worker writes the segment while the first is reading it: the first's write is refused.
    first_save = runs.store.save_segment
    other = AudienceSegmentCounter(
        world.runner.entrance, world.customers, runs.store, runs.queue, page_size=PAGE
    )

    def late_save(segment: Any, read_pages: int | None, expires_at: Any) -> bool:
        runs.store.save_segment = first_save  # type: ignore[method-assign]
        assert other.run_segment(message, partial(int, 60_000)).outcome == "done"
        return first_save(segment, read_pages, expires_at)

    runs.store.save_segment = late_save  # type: ignore[method-assign]
    report = runs.counts.run_segment(message, partial(int, 60_000))

    assert report.outcome == "superseded" and runs.queue.bodies == []
    done = runs.store.segment(run, message.segment)
    assert done is not None and done.done and runs.store.writes == 1


def test_progress_says_how_many_segments_are_done_and_the_counts_so_far(world: World) -> None:
    runs = Runs(world)
    run = runs.start().run
    assert run is not None
    bodies = runs.queue.take()
    runs.worker.run_segment(SegmentMessage.model_validate_json(bodies[0]), partial(int, 60_000))

    halfway = runs.service.status(run)
    assert halfway is not None and not halfway.complete and halfway.segments_done == 1
    assert halfway.note is not None and "1/4" in halfway.note and "1 of 4 segments" in halfway.note
    assert 0 < halfway.customers_read < CUSTOMERS
    # Nothing counted for a long while: said to be stalled.
    clock.freeze(AT + STALLED_AFTER * 2)
    stalled = runs.service.status(run)
    assert stalled is not None and stalled.note is not None and "stalled" in stalled.note
    assert stalled.stalled and not stalled.complete  # whoever polls stops asking
    clock.freeze(AT)
    for body in bodies[1:]:
        runs.worker.run_segment(SegmentMessage.model_validate_json(body), partial(int, 60_000))
    finished = runs.service.status(run)
    assert finished is not None and finished.complete and finished.customers_read == CUSTOMERS


def test_a_run_is_not_found_when_unknown_malformed_or_gone(world: World) -> None:
    runs = Runs(world)
    assert runs.service.status("b" * 32) is None
    assert runs.service.status("../../etc") is None
    # A message of a run that is gone counts nothing.
    message = SegmentMessage(
        scenario_id="x", version=1, run="c" * 32, run_at=AT, segment=0, total_segments=1, kind="count"
    )
    assert runs.worker.run_segment(message, partial(int, 60_000)).outcome == "missing"
    assert RUN_TTL.days == 1


def test_a_small_table_is_counted_at_once_a_large_one_by_a_run(world: World) -> None:
    small = Runs(world, items=1_000).start()
    assert small.run is None and small.complete and small.matching > 0
    large = Runs(world, items=BIG).start()
    assert large.run is not None and not large.complete


def test_a_count_out_of_time_at_once_becomes_a_run(world: World) -> None:
    ticks = iter(range(10_000))
    slow = AudienceCounter(
        world.customers, world.runner.entrance, segments=1, page_size=5, monotonic=lambda: float(next(ticks))
    )
    runs = Runs(world, items=1_000, counter=slow)
    started = runs.start()
    # The estimate said small, the count ran out of time: a run, not a partial answer.
    assert started.run is not None and not started.complete
    runs.work()
    finished = runs.service.status(started.run)
    assert finished is not None and finished.complete and finished.customers_read == CUSTOMERS


def test_a_queue_that_refuses_is_service_unavailable(world: World) -> None:
    runs = Runs(world)
    runs.queue.unavailable = True
    with pytest.raises(ServiceUnavailable):
        runs.start()
