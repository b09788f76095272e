"""Long local operations as runs: started by a request that answers at once, watched by another.

Moving the local clock runs every due tick, broadcast and queue after each step; on a busy machine
that takes minutes, longer than any sensible HTTP time-out. So `POST /_local/clock` and
`POST /_local/drain` answer 202 with a run id at once, the work goes on in a thread, and
`GET /_local/runs/<id>?wait=N` reports its progress, holding the answer up to N seconds until the run
ends (a long poll: a caller waits on the run's end, not on a fixed sleep). `wait_for_run` is that
caller, for the CLI, tests and benchmarks.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cems import clock

log = logging.getLogger("cems.local")

RUNS_PATH = "/_local/runs"
FINISHED = ("done", "failed")
# How long one status request may hold its answer: short enough for any client's socket time-out.
MAX_WAIT_SECONDS = 30.0


@dataclass
class Run:
    """One long operation and how far it got. Its fields change on the worker thread, under `lock`."""

    id: str
    kind: str  # "clock" or "drain"
    request: dict[str, Any]
    state: str = "queued"  # queued -> running -> done | failed
    steps: int = 0  # how many steps the run has (a clock run: one per step of time)
    steps_done: int = 0
    delivered: int = 0  # records, messages and ticks the pollers delivered so far
    now: str = ""  # CEMS's clock when last reported
    error: str | None = None  # the error type only: messages can carry personal data
    started: float = field(default_factory=time.time)
    finished: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, *, steps_done: int | None = None, delivered: int = 0) -> None:
        with self.lock:
            if steps_done is not None:
                self.steps_done = steps_done
            self.delivered += delivered
            self.now = clock.iso(clock.now())

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {
                "run": self.id,
                "kind": self.kind,
                "request": self.request,
                "state": self.state,
                "steps": self.steps,
                "steps_done": self.steps_done,
                "delivered": self.delivered,
                "now": self.now,
                "error": self.error,
                "seconds": round((self.finished or time.time()) - self.started, 3),
                "watch": f"{RUNS_PATH}/{self.id}",
            }


class Runs:
    """The stack's runs: each on its own thread, the latest `keep` remembered for their watchers."""

    def __init__(self, keep: int = 200) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._keep = keep

    def start(
        self, kind: str, request: dict[str, Any], work: Callable[[Run], object], *, steps: int = 0
    ) -> Run:
        with self._lock:
            run = Run(id=f"{kind}-{next(self._ids)}", kind=kind, request=request, steps=steps)
            run.now = clock.iso(clock.now())
            self._runs[run.id] = run
            # The oldest finished runs go first; a run still going is kept, so whoever waits on it
            # gets its end (runs are few: each moves the clock or drains, one at a time).
            finished = [key for key, kept in self._runs.items() if kept.ended.is_set()]
            for key in finished[: max(0, len(self._runs) - self._keep)]:
                del self._runs[key]
        threading.Thread(target=self._run, args=(run, work), name=f"run {run.id}", daemon=True).start()
        return run

    def _run(self, run: Run, work: Callable[[Run], object]) -> None:
        try:
            work(run)
        except Exception as exc:
            log.error("local run %s failed (%s)", run.id, type(exc).__name__)
            log.debug("local run %s failed", run.id, exc_info=exc)
            state, error = "failed", type(exc).__name__
        else:
            state, error = "done", ""
        with run.lock:
            run.state, run.error, run.finished = state, error or None, time.time()
            run.now = clock.iso(clock.now())
        run.ended.set()

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def all(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())


def wait_for_run(
    http_url: str,
    started: dict[str, Any],
    *,
    hang_seconds: float = 1800.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Waits until the run a `POST /_local/clock` or `/_local/drain` answered (`started`) ends; returns
    its last report. `hang_seconds` only tells a hung stack from a slow one: it is no speed test.
    Raises RuntimeError if the run failed, TimeoutError if it outlived the bound."""
    deadline = time.monotonic() + hang_seconds
    status = started
    while status["state"] not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"local run {status['run']} has not ended after {hang_seconds:.0f} s: {status}"
            )
        url = f"{http_url}{RUNS_PATH}/{status['run']}?wait={MAX_WAIT_SECONDS:g}"
        # The stack holds the answer up to MAX_WAIT_SECONDS; the rest is room for a busy machine.
        with urllib.request.urlopen(url, timeout=MAX_WAIT_SECONDS + 120) as answer:  # noqa: S310 - local URL
            status = json.loads(answer.read())
        if on_progress is not None:
            on_progress(status)
    if status["state"] == "failed":
        raise RuntimeError(f"local run {status['run']} failed ({status['error']}); see the stack's log")
    return status
