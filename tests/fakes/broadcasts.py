"""An in-memory broadcast store and message queue, for the broadcast and backfill behaviour tests.

The store keeps BroadcastStore's rules: a run is started once; a run not marked enqueued is claimed
again only RESTART_AFTER after it started (or was last claimed), by one caller; a segment's progress
is written on condition that it still has the pages read (a page opened, also that none is open).
The queue keeps the bodies sent, in order, and can be made unavailable (ServiceUnavailable, as
SqsQueue raises when SQS refuses).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cems.ports import ServiceUnavailable
from cems.scenario.broadcast import RESTART_AFTER, RunKind, SegmentProgress


class InMemoryBroadcastStore:
    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.segments: dict[tuple[str, str, int], SegmentProgress] = {}
        self._lock = threading.Lock()

    def start_run(
        self,
        scenario_id: str,
        run: str,
        version: int,
        segments: int,
        now: datetime,
        kind: RunKind = "broadcast",
    ) -> bool:
        with self._lock:
            if (scenario_id, run) in self.runs:
                return False
            self.runs[(scenario_id, run)] = {
                "version": version,
                "segments": segments,
                "started_at": now,
                "enqueued": False,
                "kind": kind,
            }
        return True

    def claim_stalled(self, scenario_id: str, run: str, now: datetime) -> dict[str, Any] | None:
        with self._lock:
            values = self.runs.get((scenario_id, run))
            if values is None or values["enqueued"] or values["started_at"] > now - RESTART_AFTER:
                return None
            values["started_at"] = now
            return dict(values)

    def mark_enqueued(self, scenario_id: str, run: str) -> None:
        with self._lock:
            # An UpdateItem on a missing item creates it: only `enqueued` would be there.
            self.runs.setdefault((scenario_id, run), {})["enqueued"] = True

    def progress(self, scenario_id: str, run: str, segment: int) -> SegmentProgress | None:
        stored = self.segments.get((scenario_id, run, segment))
        return None if stored is None else stored.model_copy(deep=True)

    def save_progress(self, progress: SegmentProgress, read_pages: int | None) -> bool:
        key = (progress.scenario_id, progress.run, progress.segment)
        with self._lock:
            current = self.segments.get(key)
            if (current is None) != (read_pages is None):
                return False
            if current is not None and current.pages != read_pages:
                return False
            self.segments[key] = progress.model_copy(deep=True)
        return True

    def open_page(self, progress: SegmentProgress, read_pages: int | None) -> bool:
        key = (progress.scenario_id, progress.run, progress.segment)
        with self._lock:
            current = self.segments.get(key)
            if (current is None) != (read_pages is None):
                return False
            if current is not None and (current.pages != read_pages or current.page_open):
                return False
            self.segments[key] = progress.model_copy(deep=True)
        return True

    def forget_progress(self, scenario_id: str, run: str, segment: int) -> None:
        """As if the worker died before recording its page (a test's arrangement)."""
        self.segments.pop((scenario_id, run, segment), None)


class InMemoryQueue:
    """The bodies sent to one queue; `take()` reads and removes them, as a consumer would."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.unavailable = False

    def send(self, bodies: Sequence[str]) -> None:
        if self.unavailable:
            raise ServiceUnavailable(f"{len(bodies)} messages not enqueued")
        self.bodies.extend(bodies)

    def take(self) -> list[str]:
        taken, self.bodies = self.bodies, []
        return taken
