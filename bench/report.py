"""One row per figure, printed as an aligned table: figure, value, aim, verdict."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


@dataclass(frozen=True)
class Figure:
    """A measured value; with an aim such as ("<=", 2.0) it gets a verdict, without one it is context."""

    name: str
    value: float
    unit: str = ""
    aim: tuple[str, float] | None = None
    digits: int = 2

    def shown_value(self) -> str:
        return f"{self.value:.{self.digits}f}{' ' + self.unit if self.unit else ''}"

    def shown_aim(self) -> str:
        return "" if self.aim is None else f"{self.aim[0]} {self.aim[1]:g}"

    def verdict(self) -> str:
        if self.aim is None:
            return ""
        op, target = self.aim
        return "meets" if _COMPARE[op](self.value, target) else "misses"


@dataclass(frozen=True)
class Measured:
    """What one measurement gives the table: its figures, and notes printed under it."""

    figures: list[Figure]
    notes: list[str]


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "aim", "verdict")]
    rows += [(f.name, f.shown_value(), f.shown_aim(), f.verdict()) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
