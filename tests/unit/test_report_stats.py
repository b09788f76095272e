"""The two-proportion statistics against values worked by hand (see each test's arithmetic)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
from cems.reports.stats import compare, rate, z_for


def test_critical_value() -> None:
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.90) == pytest.approx(1.644854, abs=1e-6)


def test_a_comparison_worked_by_hand() -> None:
    # Treatment 120/900, holdout 8/100.
    # p1 = 0.133333, p0 = 0.08, d = 0.053333
    # Wald: se = √(0.133333·0.866667/900 + 0.08·0.92/100) = √(0.00012840 + 0.000736) = 0.029401
    #       d ± 1.959964·0.029401 = 0.053333 ± 0.057624 → (-0.004291, 0.110957)
    # Katz: ln(0.133333/0.08) = 0.510826, se = √(1/120 - 1/900 + 1/8 - 1/100) = √0.122222 = 0.349603
    #       exp(0.510826 ± 0.685209) - 1 → (-0.160025, 2.306978); ratio - 1 = 0.666667
    # Pooled: p = 128/1000 = 0.128, se = √(0.128·0.872·(1/900 + 1/100)) = 0.035216,
    #       z = 1.514456, two-sided p = 2·(1 - Φ(1.514456)) = 0.129910
    c = compare(120, 900, 8, 100)
    assert c.treatment_rate == pytest.approx(0.133333, abs=1e-6)
    assert c.control_rate == pytest.approx(0.08)
    assert c.absolute_lift == pytest.approx(0.053333, abs=1e-6)
    assert c.absolute_ci is not None
    assert c.absolute_ci[0] == pytest.approx(-0.004291, abs=1e-6)
    assert c.absolute_ci[1] == pytest.approx(0.110957, abs=1e-6)
    assert c.relative_lift == pytest.approx(0.666667, abs=1e-6)
    assert c.relative_ci is not None
    assert c.relative_ci[0] == pytest.approx(-0.160025, abs=1e-6)
    assert c.relative_ci[1] == pytest.approx(2.306978, abs=1e-6)
    assert c.p_value == pytest.approx(0.129910, abs=1e-6)
    assert c.notes == []


def test_a_clear_difference_has_a_small_p_value() -> None:
    # 300/1000 vs 200/1000: d = 0.1; pooled p = 0.25, se = √(0.25·0.75·0.002) = 0.019365, z = 5.1640
    c = compare(300, 1000, 200, 1000)
    assert c.p_value is not None and c.p_value == pytest.approx(math.erfc(5.163978 / math.sqrt(2)), rel=1e-4)
    assert c.absolute_ci is not None and c.absolute_ci[0] > 0


def test_empty_groups_give_none_and_a_note() -> None:
    c = compare(5, 50, 0, 0)
    assert c.treatment_rate == 0.1 and c.control_rate is None
    assert (c.absolute_lift, c.absolute_ci, c.relative_lift, c.relative_ci, c.p_value) == (None,) * 5
    assert any("holdout" in n for n in c.notes)
    nothing = compare(0, 0, 0, 0)
    assert nothing.treatment_rate is None and len(nothing.notes) == 2


def test_no_conversions_anywhere() -> None:
    c = compare(0, 100, 0, 10)
    assert c.absolute_lift == 0.0
    assert c.absolute_ci is None and c.relative_lift is None and c.p_value is None
    assert len(c.notes) == 3
    # Nothing in the answer is NaN or infinite: it serialises as strict JSON.
    json.dumps(asdict(c), allow_nan=False)


def test_no_conversions_in_one_group() -> None:
    holdout_none = compare(10, 100, 0, 10)
    assert holdout_none.relative_lift is None and holdout_none.absolute_ci is not None
    treatment_none = compare(0, 100, 2, 10)
    assert treatment_none.relative_lift == -1.0 and treatment_none.relative_ci is None
    assert treatment_none.p_value is not None
    json.dumps([asdict(holdout_none), asdict(treatment_none)], allow_nan=False)


def test_everyone_converted() -> None:
    c = compare(10, 10, 5, 5)
    assert c.absolute_lift == 0.0 and c.absolute_ci is None and c.p_value is None
    assert c.relative_lift == pytest.approx(0.0)


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        compare(11, 10, 0, 10)
    with pytest.raises(ValueError):
        compare(-1, 10, 0, 10)
    assert rate(0, 0) is None and rate(1, 4) == 0.25
