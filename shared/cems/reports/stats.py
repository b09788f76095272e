"""Two proportions compared: the treatment's conversion rate against the holdout's.

- absolute lift p1 - p0, with an unpooled Wald interval: d ± z·√(p1(1-p1)/n1 + p0(1-p0)/n0);
- relative lift p1/p0 - 1, with the Katz log-ratio interval:
  exp(ln(p1/p0) ± z·√(1/x1 - 1/n1 + 1/x0 - 1/n0)) - 1;
- a two-sided p-value from the pooled z test: z = d / √(p(1-p)(1/n1 + 1/n0)), p = (x1+x0)/(n1+n0).

Whatever cannot be computed (an empty group, no conversions in a group for the ratio, no variation
at all) is None with a note saying why: never a division error, never NaN or infinity in JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

_NORMAL = NormalDist()


def z_for(confidence: float) -> float:
    """The two-sided critical value: 1.959964 for 0.95."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def rate(successes: int, trials: int) -> float | None:
    """successes / trials, or None for no trials."""
    return successes / trials if trials > 0 else None


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Comparison:
    """Treatment (x1 of n1) against control (x0 of n0)."""

    treatment_rate: float | None
    control_rate: float | None
    absolute_lift: float | None
    absolute_ci: tuple[float, float] | None
    relative_lift: float | None
    relative_ci: tuple[float, float] | None
    p_value: float | None
    confidence: float
    notes: list[str] = field(default_factory=list)


def compare(x1: int, n1: int, x0: int, n0: int, confidence: float = 0.95) -> Comparison:
    for name, value in (("x1", x1), ("n1", n1), ("x0", x0), ("n0", n0)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")
    if x1 > n1 or x0 > n0:
        raise ValueError(f"more conversions than customers ({x1}/{n1}, {x0}/{n0})")
    notes: list[str] = []
    p1, p0 = rate(x1, n1), rate(x0, n0)
    if p1 is None:
        notes.append("no customers in the treatment group: no rate or lift")
    if p0 is None:
        notes.append("no customers in the holdout: no lift can be measured")
    if p1 is None or p0 is None:
        return Comparison(p1, p0, None, None, None, None, None, confidence, notes)
    z = z_for(confidence)
    difference = p1 - p0

    absolute_ci: tuple[float, float] | None = None
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    if se > 0:
        absolute_ci = (difference - z * se, difference + z * se)
    else:
        notes.append("both rates are 0% or 100%: the absolute lift has no interval")

    relative: float | None = None
    relative_ci: tuple[float, float] | None = None
    if x0 == 0:
        notes.append("no conversions in the holdout: the relative lift is undefined")
    elif x1 == 0:
        relative = -1.0
        notes.append("no conversions in the treatment group: the relative lift has no interval")
    else:
        relative = p1 / p0 - 1
        log_se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
        log_ratio = math.log(p1 / p0)
        relative_ci = (math.exp(log_ratio - z * log_se) - 1, math.exp(log_ratio + z * log_se) - 1)

    p_value: float | None = None
    pooled = (x1 + x0) / (n1 + n0)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if pooled_se > 0:
        p_value = min(1.0, 2 * _NORMAL.cdf(-abs(difference) / pooled_se))
    else:
        notes.append("every customer converted, or none did: no p-value")
    return Comparison(p1, p0, difference, absolute_ci, relative, relative_ci, p_value, confidence, notes)
