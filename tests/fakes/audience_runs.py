"""An in-memory store of fanned-out audience counts (cems.console.audience_runs.AudienceRunStore), with
DynamoAudienceRunStore's rules: a run is written once, a segment's tally on condition of the pages it
was read with (none: that there is no item), the segments listed in segment order. `writes` counts
the segment writes that took effect."""

from __future__ import annotations

import threading
from datetime import datetime

from cems.console.audience_runs import AudienceRun, AudienceSegment


class InMemoryAudienceRuns:
    def __init__(self) -> None:
        self.runs: dict[str, AudienceRun] = {}
        self.tallies: dict[tuple[str, int], AudienceSegment] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def start(self, run: AudienceRun, expires_at: datetime) -> None:
        with self._lock:
            assert run.run not in self.runs, "a run id is written once"
            self.runs[run.run] = run.model_copy(deep=True)

    def run(self, run_id: str) -> AudienceRun | None:
        found = self.runs.get(run_id)
        return None if found is None else found.model_copy(deep=True)

    def segment(self, run_id: str, segment: int) -> AudienceSegment | None:
        found = self.tallies.get((run_id, segment))
        return None if found is None else found.model_copy(deep=True)

    def save_segment(self, segment: AudienceSegment, read_pages: int | None, expires_at: datetime) -> bool:
        key = (segment.run, segment.segment)
        with self._lock:
            current = self.tallies.get(key)
            if (current is None) != (read_pages is None):
                return False
            if current is not None and current.pages != read_pages:
                return False
            self.tallies[key] = segment.model_copy(deep=True)
            self.writes += 1
        return True

    def segments(self, run_id: str) -> list[AudienceSegment]:
        found = [s.model_copy(deep=True) for (run, _), s in self.tallies.items() if run == run_id]
        return sorted(found, key=lambda s: s.segment)
