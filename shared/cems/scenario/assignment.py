"""Deterministic assignment of customers to the holdout group and to A/B variants.

A customer's place depends only on the scenario id, the customer id and (for a split) the step id,
never on the time or the scenario's version: re-entering, or a new version of the scenario, puts the
customer in the same group, and the engine can recompute any assignment to check a record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cems.scenario.model import Variant

_BUCKETS = 10_000  # 0.01 % resolution


def bucket(*parts: str) -> int:
    """A stable number in [0, 10000) for these parts."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def in_holdout(scenario_id: str, customer_id: str, percent: float) -> bool:
    """Whether the customer is in the scenario's control group (`entry.holdout_percent`)."""
    return bucket(scenario_id, "holdout", customer_id) < round(percent * _BUCKETS / 100)


def pick_variant(scenario_id: str, step_id: str, customer_id: str, variants: Sequence[Variant]) -> Variant:
    """The customer's variant of a split step, in proportion to the weights."""
    total = sum(v.weight for v in variants)
    if total <= 0:
        raise ValueError("the variants' weights add up to 0")
    point = bucket(scenario_id, step_id, customer_id) / _BUCKETS * total
    running = 0.0
    for variant in variants:
        running += variant.weight
        if point < running:
            return variant
    return next(v for v in reversed(variants) if v.weight > 0)
