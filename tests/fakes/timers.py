"""An in-memory timer queue (ports.TimerQueue): the timers started, each with the delay the SQS
adapter would give it at that moment (held to the adapter by tests/integration/test_timer_queue.py)."""

from __future__ import annotations

from collections.abc import Sequence

from cems import clock
from cems.ports import ServiceUnavailable
from cems.scenario.timers import Timer


class RecordingTimerQueue:
    def __init__(self) -> None:
        self.started: list[tuple[Timer, int]] = []
        self.refusing = False

    def start(self, timers: Sequence[Timer]) -> None:
        if self.refusing:
            raise ServiceUnavailable("timers not enqueued: the queue refused")
        now = clock.now()
        self.started += [(timer, timer.delay_seconds(now)) for timer in timers]

    def take(self) -> list[Timer]:
        """The timers started since the last call, oldest first."""
        taken, self.started = [timer for timer, _ in self.started], []
        return taken
