"""RFM scores and lifecycle stages, derived from the purchase facts on a profile.

Small shops have too few customers for quintiles to mean anything (and quintiles move whenever a
customer is added), so CEMS scores with fixed bands chosen for a Japanese shop selling everyday
goods, in yen. Each score is 1 (weakest) to 5 (strongest); a customer who never bought has no
scores. The bands are data (`RfmBands`), so a shop can be given its own later.

| score | recency: days since the last order | frequency: orders | monetary: total spent (JPY) |
|---|---|---|---|
| 5 | 0-30      | 10 or more | 100,000 or more |
| 4 | 31-60     | 5-9        | 30,000-99,999   |
| 3 | 61-90     | 3-4        | 10,000-29,999   |
| 2 | 91-180    | 2          | 5,000-9,999     |
| 1 | 181 or more | 1        | under 5,000     |

Lifecycle stage (first rule that applies):

| stage | rule |
|---|---|
| `prospect` | no orders yet |
| `dormant`  | last order more than 180 days ago |
| `at_risk`  | last order 91-180 days ago |
| `new`      | one order (within the last 90 days) |
| `loyal`    | 3 or more orders, the last within 90 days |
| `active`   | otherwise (2 orders, the last within 90 days) |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from cems.models import Profile

Stage = Literal["prospect", "new", "active", "loyal", "at_risk", "dormant"]


@dataclass(frozen=True)
class RfmBands:
    # Lower bounds for scores 5, 4, 3, 2 (anything below the last is 1); recency is an upper bound.
    recency_days: tuple[int, int, int, int] = (30, 60, 90, 180)
    frequency_orders: tuple[int, int, int, int] = (10, 5, 3, 2)
    monetary_yen: tuple[int, int, int, int] = (100_000, 30_000, 10_000, 5_000)
    # Lifecycle.
    active_days: int = 90
    dormant_days: int = 180
    loyal_orders: int = 3


DEFAULT_BANDS = RfmBands()


@dataclass(frozen=True)
class Rfm:
    recency: int
    frequency: int
    monetary: int


def days_since(at: datetime, now: datetime) -> int:
    """Whole days from `at` to `now` (0 on the same instant; never negative)."""
    return max(0, (now - at).days)


def rfm_scores(profile: Profile, now: datetime, bands: RfmBands = DEFAULT_BANDS) -> Rfm | None:
    last = profile.last_purchase_at
    if last is None:
        return None
    recency_days = days_since(last, now)
    recency = next((5 - i for i, limit in enumerate(bands.recency_days) if recency_days <= limit), 1)
    count = profile.purchase_count
    frequency = next((5 - i for i, low in enumerate(bands.frequency_orders) if count >= low), 1)
    total = profile.monetary_total
    monetary = next((5 - i for i, low in enumerate(bands.monetary_yen) if total >= Decimal(low)), 1)
    return Rfm(recency, frequency, monetary)


def lifecycle_stage(profile: Profile, now: datetime, bands: RfmBands = DEFAULT_BANDS) -> Stage:
    last = profile.last_purchase_at
    if last is None:
        return "prospect"
    idle = days_since(last, now)
    if idle > bands.dormant_days:
        return "dormant"
    if idle > bands.active_days:
        return "at_risk"
    if profile.purchase_count == 1:
        return "new"
    if profile.purchase_count >= bands.loyal_orders:
        return "loyal"
    return "active"
