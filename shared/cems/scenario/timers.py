"""Timers on the second: the messages that wake one due enrolment (or date entry) at its moment.

The due index stays the record of what is due; a timer is only a wake-up call for one item of it,
handed to an SQS queue with a per-message delay so it arrives within a second of the item's due time
rather than on the next minute's tick (issue 13). Two writers start timers:

- `tick`, every minute, looks ahead: every item due in (now, now + LOOK_AHEAD] gets one. The window
  is longer than the tick's period, so a tick running a little late still leaves no gap between
  what one tick covered and what the next covers; an item in the overlap gets two timers, and the
  second finds it moved on (a consistent read and a conditional write: nothing happens twice).
- the runner, after it writes an enrolment due within the look-ahead (a one-minute wait or
  time-out written between two ticks, which the next tick could find only after it fell due).

A timer that arrives finds one of: not due yet (SQS delivered early, or clocks differ: it is sent
again for the remainder); its item due at that moment (advanced, on a consistent read, through
the runner's per-journey path and its conditional write); its item moved, advanced or gone (the
timer is stale and does nothing). Whatever a timer misses (its message lost, the queue down), the
tick advances when it finds it due, as before timers existed: at most a minute late, never twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cems import clock

# How far ahead `tick` starts timers. Longer than the schedule's minute by half a minute: a tick that
# starts late (EventBridge, a cold start) or whose due work took long still overlaps the next one.
LOOK_AHEAD = timedelta(seconds=90)
# SQS's largest per-message delay (DelaySeconds).
MAX_DELAY_SECONDS = 900

TimerKind = Literal["enrolment", "date"]
# What a timer did when it arrived: advanced its item ("fired"), found it due with nothing to change
# ("idle"), arrived before the due time and was sent again for the rest ("early"), or found its item
# moved, advanced or gone ("stale").
TimerOutcome = Literal["fired", "idle", "early", "stale"]


@dataclass(frozen=True)
class Timer:
    """A wake-up for one item of the due index: an enrolment (`ENR#`) or a date entry (`DATE#`)
    due at `due_at`. The due time is kept to the millisecond, as the index stores it, so a timer
    matches its item exactly while the item has not moved."""

    customer_id: str
    scenario_id: str
    due_at: datetime
    kind: TimerKind = "enrolment"

    @classmethod
    def of(cls, customer_id: str, scenario_id: str, due_at: datetime, kind: TimerKind = "enrolment") -> Timer:
        return cls(customer_id, scenario_id, datetime.fromisoformat(clock.iso(due_at)), kind)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.customer_id, self.scenario_id, clock.iso(self.due_at))

    def matches(self, due_at: datetime | None) -> bool:
        """Whether an item read now is still due at this timer's moment (not moved, not advanced)."""
        return due_at is not None and clock.iso(due_at) == clock.iso(self.due_at)

    def delay_seconds(self, now: datetime) -> int:
        """The SQS delay that delivers the timer at its due time: rounded up (a second late at most,
        never early: an early timer costs a second message), at most SQS's 15 minutes."""
        remaining = (self.due_at - now).total_seconds()
        return max(0, min(MAX_DELAY_SECONDS, math.ceil(remaining)))

    def body(self) -> str:
        return json.dumps(
            {
                "customer_id": self.customer_id,
                "scenario_id": self.scenario_id,
                "due_at": clock.iso(self.due_at),
                "kind": self.kind,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_body(cls, body: str) -> Timer:
        """The timer a message carries; ValueError (or KeyError) for a body that is not one."""
        data = json.loads(body)
        kind = data.get("kind", "enrolment")
        if kind not in ("enrolment", "date"):
            raise ValueError(f"unknown timer kind {kind!r}")
        customer_id, scenario_id = str(data["customer_id"]), str(data["scenario_id"])
        if not customer_id or not scenario_id:
            raise ValueError("a timer names a customer and a scenario")
        return cls.of(customer_id, scenario_id, datetime.fromisoformat(data["due_at"]), kind)


def within_look_ahead(due_at: datetime | None, now: datetime) -> bool:
    """Whether an item written now with this due time needs a timer from its writer: due later than
    now (an item due now is advanced by whoever wrote it, or the tick) and soon enough that no tick
    may have looked ahead to it yet."""
    return due_at is not None and now < due_at <= now + LOOK_AHEAD


def lateness_ms(timer: Timer, now: datetime) -> float:
    """How long after its due time a timer fired (the TimerLateness metric)."""
    return max(0.0, (now - timer.due_at).total_seconds() * 1000)
