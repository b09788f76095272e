"""`python -m bench [--only NAME ...]`: print the figures (requests, coldstart, throughput, line,
journeys, email, broadcast, events, console, audience, timers, web)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import bench.audience
import bench.aws_requests
import bench.broadcast
import bench.coldstart
import bench.console
import bench.events
import bench.journeys
import bench.line
import bench.mail
import bench.throughput
import bench.timers
import bench.web
from bench.report import Figure, Measured, table

MEASURES: dict[str, Callable[[argparse.Namespace], Measured]] = {
    "requests": lambda _: bench.aws_requests.measure(),
    "coldstart": lambda args: bench.coldstart.measure(python=args.python),
    "throughput": lambda _: bench.throughput.measure(),
    "line": lambda args: bench.line.measure(python=args.python),
    "journeys": lambda _: bench.journeys.measure(),
    "broadcast": lambda _: bench.broadcast.measure(),
    "email": lambda args: bench.mail.measure(python=args.python),
    "events": lambda _: bench.events.measure(),
    "console": lambda _: bench.console.measure(),
    "audience": lambda _: bench.audience.measure(),
    "timers": lambda _: bench.timers.measure(),
    "web": lambda _: bench.web.measure(),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=sorted(MEASURES), action="append", help="run only these figures")
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter for the cold-start children (coldstart's default: a Lambda-like venv per "
        "function, see bench/lambda_venv.py; line's and email's: this one)",
    )
    args = parser.parse_args(argv)
    chosen = args.only or list(MEASURES)
    print(
        f"CEMS bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()}",
        flush=True,
    )
    figures: list[Figure] = []
    notes: list[str] = []
    for name in chosen:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        measured = MEASURES[name](args)
        figures += measured.figures
        notes += measured.notes
    print()
    print(table(figures))
    if notes:
        print()
        print("\n".join(f"- {note}" for note in notes))
    return 0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
