"""In-memory ends of the scenario runner: the dispatch sink, report counters and rich menu links.

The sink routes as QueueDispatchSink does (each dispatch to its channel's queue, its body written by
the channel's plugin) and keeps each body as the queue would carry it, so a test reads what the
senders would receive. The counters keep `once` markers as ReportCounters does: a fact counted
already counts nothing and answers False.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cems import clock
from cems.channels.registry import plugin
from cems.line.multicast import queue_bodies
from cems.models import Channel
from cems.ports import CountDelta, ServiceUnavailable, SinkResult
from cems.reports.counters import REVENUE, Metric, ReportCell, dated
from cems.scenario.engine import Dispatch


class RecordingDispatchSink:
    """Keeps what would be enqueued, per channel queue, as the channel's plugin writes the body. A
    channel without a queue (not in `queues`; every channel by default) is `unsupported`, as
    QueueDispatchSink answers for a queue URL that is not configured."""

    def __init__(self, *, queues: Iterable[Channel] = tuple(Channel)) -> None:
        self.queues = frozenset(queues)
        self.dispatches: list[Dispatch] = []
        self.batches: list[str] = []
        self.bodies: dict[Channel, list[dict[str, Any]]] = {channel: [] for channel in Channel}
        self._taken = dict.fromkeys(Channel, 0)

    def send(self, dispatch: Dispatch) -> SinkResult:
        if dispatch.channel not in self.queues or dispatch.channel not in dispatch.messages:
            return "unsupported"
        self.bodies[dispatch.channel].append(json.loads(plugin(dispatch.channel).queue_body(dispatch, None)))
        self.dispatches.append(dispatch)
        return "enqueued"

    def send_batch(self, dispatches: Sequence[Dispatch], batch: str) -> list[SinkResult]:
        """Grouped as QueueDispatchSink groups them (cems.line.multicast.queue_bodies): identical
        LINE content in one body with many recipients. `batches` keeps each call's `batch`."""
        self.batches.append(batch)
        results: list[SinkResult] = ["unsupported"] * len(dispatches)
        for queued in queue_bodies(dispatches, batch, None, self.queues):
            self.bodies[queued.channel].append(json.loads(queued.body))
            for position in queued.positions:
                self.dispatches.append(dispatches[position])
                results[position] = "enqueued"
        return results

    def take(self, channel: Channel) -> list[dict[str, Any]]:
        """The bodies enqueued on `channel`'s queue since the last call (as a test drains a queue)."""
        bodies = self.bodies[channel]
        new = bodies[self._taken[channel] :]
        self._taken[channel] = len(bodies)
        return new

    def take_line(self) -> list[dict[str, Any]]:
        return self.take(Channel.LINE)

    def take_email(self) -> list[dict[str, Any]]:
        return self.take(Channel.EMAIL)


class InMemoryReportCounters:
    """Report cells and `once` markers in dictionaries; `unavailable` makes every add fail as
    DynamoDB being down does (ServiceUnavailable). Cells are dated with the clock's report day as
    the store dates them; `count` adds up every day (and channel) of a cell given without one."""

    def __init__(self) -> None:
        self.counts: dict[ReportCell, dict[str, int | Decimal]] = {}
        self.once: set[tuple[str, str]] = set()
        self.unavailable = False
        self._lock = threading.Lock()

    def add(
        self, cell: ReportCell, metric: Metric, *, once: str | None = None, revenue: Decimal | None = None
    ) -> bool:
        if self.unavailable:
            raise ServiceUnavailable("report counter not added: the fake is down")
        with self._lock:
            # A marker is per scenario, as the store keys it.
            if once is not None:
                if (cell.scenario_id, once) in self.once:
                    return False
                self.once.add((cell.scenario_id, once))
            counts = self.counts.setdefault(dated(cell, clock.now()), {})
            counts[metric.value] = counts.get(metric.value, 0) + 1
            if revenue is not None:
                counts[REVENUE] = Decimal(counts.get(REVENUE, 0)) + revenue
        return True

    def add_many(self, deltas: Sequence[CountDelta], *, once: str) -> bool:
        if self.unavailable:
            raise ServiceUnavailable("report counter not added: the fake is down")
        if not deltas:
            return True
        scenarios = {d.cell.scenario_id for d in deltas}
        if len(scenarios) != 1:
            raise ValueError("add_many counts for one scenario at a time (its marker is kept per scenario)")
        for delta in deltas:
            if delta.n < 0:
                raise ValueError(f"a count cannot go down ({delta.metric.value} {delta.n})")
        with self._lock:
            marker = (deltas[0].cell.scenario_id, once)
            if marker in self.once:
                return False
            self.once.add(marker)
            now = clock.now()
            for delta in deltas:
                counts = self.counts.setdefault(dated(delta.cell, now), {})
                counts[delta.metric.value] = counts.get(delta.metric.value, 0) + delta.n
                if delta.revenue is not None:
                    counts[REVENUE] = Decimal(counts.get(REVENUE, 0)) + delta.revenue
        return True

    def cells(self, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
        found = [
            (cell, dict(counts)) for cell, counts in self.counts.items() if cell.scenario_id == scenario_id
        ]
        return sorted(found, key=lambda item: _cell_order(item[0]))

    def scenario_ids(self) -> list[str]:
        return sorted({cell.scenario_id for cell in self.counts})

    def count(self, cell: ReportCell, metric: Metric) -> int:
        """`metric` in `cell`, over every channel and day when the cell names none."""
        return sum(
            int(counts.get(metric.value, 0))
            for stored, counts in self.counts.items()
            if _same_cell(stored, cell)
        )


def _same_cell(stored: ReportCell, asked: ReportCell) -> bool:
    return (
        (stored.scenario_id, stored.version, stored.step_id, stored.variant, stored.holdout)
        == (asked.scenario_id, asked.version, asked.step_id, asked.variant, asked.holdout)
        and asked.channel in (None, stored.channel)
        and asked.day in (None, stored.day)
    )


def _cell_order(cell: ReportCell) -> tuple[int, str, str, str, str, str]:
    """ReportCounters' key order: version, step ("-" for none), variant ("-" or "=name"), group,
    channel, day."""
    variant = "-" if cell.variant is None else f"={cell.variant}"
    return (
        cell.version,
        cell.step_id or "-",
        variant,
        "h" if cell.holdout else "t",
        cell.channel or "",
        cell.day or "",
    )


@dataclass
class RecordingRichMenus:
    """Rich menu links by LINE user id; `failure` is the reason every link answers instead."""

    links: dict[str, str | None] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    failure: str | None = None

    def link(self, line_user_id: str, rich_menu_id: str | None) -> str | None:
        self.calls.append((line_user_id, rich_menu_id))
        if self.failure is not None:
            return self.failure
        self.links[line_user_id] = rich_menu_id
        return None
