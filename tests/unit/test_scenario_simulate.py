"""`cems scenario simulate`: the printed timeline of one customer through the example scenarios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cems.cli import main
from cems.scenario.assignment import in_holdout

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "scenarios"


def treated(scenario_id: str, percent: float) -> str:
    return next(f"cus_{i}" for i in range(1000) if not in_holdout(scenario_id, f"cus_{i}", percent))


def held_out(scenario_id: str, percent: float) -> str:
    return next(f"cus_{i}" for i in range(1000) if in_holdout(scenario_id, f"cus_{i}", percent))


def play(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    events: list[dict[str, Any]],
    customer: str,
) -> list[str]:
    events_file = tmp_path / "events.json"
    events_file.write_text(json.dumps(events, ensure_ascii=False), encoding="utf-8")
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(
        json.dumps({"customer_id": customer, "traits": {"last_name": "山田"}}), encoding="utf-8"
    )
    code = main(
        [
            "scenario",
            "simulate",
            str(EXAMPLES / scenario),
            "--events",
            str(events_file),
            "--profile",
            str(profile_file),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return out.splitlines()


def cart_added(at: str) -> dict[str, Any]:
    return {"event": "Product Added", "timestamp": at, "properties": {"name": "八女玉露 100g"}}


def test_cart_abandonment_a_buying_customer_gets_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buyer = treated("cart-abandonment", 5)
    lines = play(
        tmp_path,
        capsys,
        "cart_abandonment.json",
        [
            cart_added("2026-05-01T14:00:00+09:00"),
            {
                "event": "Order Completed",
                "timestamp": "2026-05-01T14:25:00+09:00",
                "properties": {"order_id": "o1"},
            },
        ],
        buyer,
    )
    assert lines[1].startswith("2026-05-01 14:00 Fri") and "entered" in lines[1] and "treatment" in lines[1]
    assert lines[2].startswith("2026-05-01 14:25 Fri") and "converted" in lines[2]
    assert lines[-1] == "holdout: no; variant: -; final: converted; sends: 0"


def test_cart_abandonment_a_non_buying_customer_is_reminded_after_an_hour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = play(
        tmp_path,
        capsys,
        "cart_abandonment.json",
        [cart_added("2026-05-01T14:00:00+09:00")],
        treated("cart-abandonment", 5),
    )
    (sent,) = [line for line in lines if "line_then_email" in line]
    assert sent.startswith("2026-05-01 15:00 Fri  remind")
    assert (
        "「八女玉露 100g」がカートに残っています" in sent
        and "email fallback: カートに商品が残っています" in sent
    )
    assert lines[-1] == "holdout: no; variant: -; final: completed; sends: 1"


def test_cart_abandonment_late_at_night_waits_for_the_morning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = play(
        tmp_path,
        capsys,
        "cart_abandonment.json",
        [cart_added("2026-05-01T20:30:00+09:00")],
        treated("cart-abandonment", 5),
    )
    assert any(line.startswith("2026-05-01 21:30 Fri  remind") and "quiet hours" in line for line in lines)
    assert any(
        line.startswith("2026-05-02 09:00 Sat  remind") and "line_then_email" in line for line in lines
    )


def test_a_holdout_customer_is_noted_and_sent_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = play(
        tmp_path,
        capsys,
        "cart_abandonment.json",
        [cart_added("2026-05-01T14:00:00+09:00")],
        held_out("cart-abandonment", 5),
    )
    assert "holdout (sends nothing)" in lines[1]
    assert any("held_out" in line for line in lines)
    assert lines[-1].startswith("holdout: yes (sent nothing);") and lines[-1].endswith("sends: 0")


def order(at: str, sku: str = "GYO-YAME-100", category: str = "玉露") -> dict[str, Any]:
    return {
        "event": "Order Completed",
        "timestamp": at,
        "properties": {
            "order_id": at,
            "total": 3240,
            "products": [{"sku": sku, "category": category, "price": 3240}],
        },
    }


def test_post_purchase_tea_timeline_to_the_day_30_reminder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = treated("post-purchase-yame-gyokuro", 10)
    events = [
        order("2026-05-01T14:00:00+09:00"),
        {
            "event": "line_postback",
            "timestamp": "2026-05-04T12:00:00+09:00",
            "properties": {"survey": {"question": "gyokuro_taste", "answer": "bitter"}},
        },
    ]
    lines = play(tmp_path, capsys, "post_purchase_tea.json", events, customer)
    text = "\n".join(lines)
    assert lines[0] == f"scenario post-purchase-yame-gyokuro (Asia/Tokyo), customer {customer}"
    assert "2026-05-04 10:00 Mon  ask-taste          line            山田様、先日は「八女玉露」を" in text
    assert "2026-05-04 12:00 Mon  by-answer          branch          branch 1 → brewing-tips" in text
    # the day's LINE cap (1) was used by the survey: the tips wait for the next morning's window
    assert (
        "2026-05-04 12:00 Mon  brewing-tips       deferred        line cap reached; again at 2026-05-05 09:00"
        in text
    )
    assert "2026-05-05 09:00 Tue  brewing-tips       line            ご回答ありがとうございます。" in text
    assert "offer-test         split" in text
    assert "2026-05-31 10:00 Sun  refill-reminder    line_then_email 山田様、八女玉露はそろそろ" in text
    assert lines[-2] == "2026-05-31 10:00 Sun  done               completed"
    assert lines[-1].startswith("holdout: no; variant: ") and lines[-1].endswith("final: completed; sends: 4")


def test_post_purchase_a_green_tea_repurchase_converts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [order("2026-05-01T14:00:00+09:00"), order("2026-05-20T19:00:00+09:00", "SEN-100", "緑茶")]
    lines = play(
        tmp_path, capsys, "post_purchase_tea.json", events, treated("post-purchase-yame-gyokuro", 10)
    )
    assert lines[-2].startswith("2026-05-20 19:00 Wed  -") and "converted" in lines[-2]
    assert lines[-1].endswith("final: converted; sends: 2")


def test_bad_inputs_exit_2_and_an_invalid_scenario_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.json"
    events.write_text('{"not": "a list"}', encoding="utf-8")
    assert (
        main(["scenario", "simulate", str(EXAMPLES / "cart_abandonment.json"), "--events", str(events)]) == 2
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "x"}', encoding="utf-8")
    assert main(["scenario", "simulate", str(bad), "--events", str(events)]) == 1
    capsys.readouterr()
