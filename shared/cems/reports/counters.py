"""Report counters as values: the metrics counted and the cell (scenario, version, step, variant,
group) each is counted in. Stored by cems.adapters.dynamodb.report_counters; reports read them.

Counters hold no personal data (no customer id), so erasure leaves them; a `once` marker holds only
a hash of what was counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REVENUE = "revenue"


class Metric(StrEnum):
    ENROLLED = "enrolled"
    HELD_OUT = "held_out"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CAPPED = "capped"
    DEFERRED = "deferred"
    OPENED = "opened"
    CLICKED = "clicked"
    CONVERTED = "converted"


@dataclass(frozen=True)
class ReportCell:
    scenario_id: str
    version: int
    step_id: str | None = None  # None: the scenario level (enrolled, held_out, converted, revenue)
    variant: str | None = None  # the A/B variant (None when the scenario has no split)
    holdout: bool = False
