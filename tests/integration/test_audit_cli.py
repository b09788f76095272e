"""`cems audit` on the moto-backed audit store: one line per entry in JST (or JSON Lines), newest first,
filtered, paged past MAX_PAGE, and times without an offset read as Japan time."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.adapters.dynamodb.audit import DynamoAuditStore
from cems.audit import AuditAction, AuditLog, AuditOutcome
from cems.console.access import Role
from cems.console.audit_cli import JST, audit_command, parse_time, register

T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 JST


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cems")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["audit", *argv])


@pytest.fixture
def store(dynamodb: Any) -> DynamoAuditStore:
    store = DynamoAuditStore("AuditTable", dynamodb)
    times = iter(T0 + timedelta(minutes=n) for n in range(10_000))
    log = AuditLog(store, now=lambda: next(times))
    log.record(actor="sato", role=Role.ADMIN, action=AuditAction.SIGN_IN, source_ip="203.0.113.7")
    log.record(
        actor="suzuki",
        role=Role.ANALYST,
        action=AuditAction.CUSTOMER_UNMASK,
        target="cus_0123456789abcdef0123456789abcdef",
        source_ip="203.0.113.8",
        outcome=AuditOutcome.REFUSED,
        detail={"permission": "customers_unmask"},
    )
    log.record(actor="arn:aws:iam::123456789012:role/Ops", action=AuditAction.CUSTOMER_ERASE, source_ip=None)
    return store


def test_entries_print_one_line_each_newest_first_in_jst(
    store: DynamoAuditStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_command(_args("--since", "2026-05-01", "--until", "2026-05-02"), store) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "2026-05-01 12:02:00 JST  arn:aws:iam::123456789012:role/Ops  -  customer_erase  -  -  allowed",
        "2026-05-01 12:01:00 JST  suzuki  analyst  customer_unmask  cus_0123456789abcdef0123456789abcdef"
        '  203.0.113.8  refused  {"permission": "customers_unmask"}',
        "2026-05-01 12:00:00 JST  sato  admin  sign_in  -  203.0.113.7  allowed",
    ]


def test_filters_and_json_lines(store: DynamoAuditStore, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--since", "2026-05-01T00:00+09:00", "--until", "2026-05-02", "--json")
    assert audit_command(_args(*argv, "--actor", "suzuki"), store) == 0
    [entry] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["action"] == "customer_unmask" and entry["outcome"] == "refused"
    assert audit_command(_args(*argv, "--action", "sign_in"), store) == 0
    assert [json.loads(line)["actor"] for line in capsys.readouterr().out.splitlines()] == ["sato"]


def test_the_limit_stops_the_listing_and_says_there_is_more(
    store: DynamoAuditStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_command(_args("--since", "2026-05-01", "--until", "2026-05-02", "--limit", "2"), store) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "--limit" in captured.err


def test_a_listing_longer_than_a_page_is_read_page_by_page(
    dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DynamoAuditStore("AuditTable", dynamodb)
    times = iter(T0 + timedelta(seconds=n) for n in range(10_000))
    log = AuditLog(store, now=lambda: next(times))
    for _ in range(520):
        log.record(actor="sato", action=AuditAction.REPORT_VIEW, target="post-purchase-tea", source_ip="-")
    assert (
        audit_command(_args("--since", "2026-05-01", "--until", "2026-05-02", "--limit", "1000"), store) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 520 and lines == sorted(lines, reverse=True)


def test_bad_times_are_refused(store: DynamoAuditStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert audit_command(_args("--since", "yesterday"), store) == 2
    assert "ISO 8601" in capsys.readouterr().err
    assert audit_command(_args("--since", "2026-05-02", "--until", "2026-05-01"), store) == 2


def test_times_without_an_offset_are_japan_time() -> None:
    assert parse_time("2026-05-01") == datetime(2026, 4, 30, 15, 0, tzinfo=UTC)
    assert parse_time("2026-05-01T09:30") == datetime(2026, 5, 1, 9, 30, tzinfo=JST)
    assert parse_time("2026-05-01T00:30:00Z") == datetime(2026, 5, 1, 0, 30, tzinfo=UTC)


def test_the_cems_command_has_the_audit_sub_command(capsys: pytest.CaptureFixture[str]) -> None:
    from cems.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["audit", "--help"])
    assert stopped.value.code == 0
    assert "--since" in capsys.readouterr().out
