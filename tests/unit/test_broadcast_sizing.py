"""A broadcast's fan-out sized to CustomersTable (issue 11): one segment per `segment_customers`
items of the table, at least 1 (a small table is ONE segment, so its pages of 500 are whole LINE
multicasts), at most the maximum; the size read at most once per SIZE_CACHE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cems.scenario.broadcast import SIZE_CACHE, BroadcastStarter

from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.fakes.journeys import InMemoryScenarioStore

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


class CountedSize:
    def __init__(self, items: int) -> None:
        self.items = items
        self.reads = 0

    def approximate_items(self) -> int:
        self.reads += 1
        return self.items


def _starter(items: int, maximum: int = 1_000) -> tuple[BroadcastStarter, CountedSize]:
    size = CountedSize(items)
    starter = BroadcastStarter(
        InMemoryScenarioStore(),
        InMemoryBroadcastStore(),
        InMemoryQueue(),
        maximum,
        sizing=size,
        segment_customers=10_000,
    )
    return starter, size


@pytest.mark.parametrize(
    ("items", "segments"),
    [(0, 1), (3_600, 1), (10_000, 1), (10_001, 2), (3_000_000, 300), (50_000_000, 1_000)],
)
def test_segments_follow_the_tables_size_between_one_and_the_maximum(items: int, segments: int) -> None:
    starter, _ = _starter(items)
    assert starter.segments_for(NOW) == segments


def test_the_size_is_read_once_an_hour() -> None:
    starter, size = _starter(25_000)
    assert starter.segments_for(NOW) == 3
    size.items = 95_000
    assert starter.segments_for(NOW + SIZE_CACHE - timedelta(seconds=1)) == 3
    assert starter.segments_for(NOW + SIZE_CACHE) == 10
    assert size.reads == 2


def test_without_a_size_every_run_has_the_segments_given() -> None:
    starter = BroadcastStarter(InMemoryScenarioStore(), InMemoryBroadcastStore(), InMemoryQueue(), 7)
    assert starter.segments_for(NOW) == 7
