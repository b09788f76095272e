"""The audit log's rules on the in-memory store: ids only (personal data refused per field and kind,
never echoed), every action recordable, time-ordered ids, newest first in pages, bounded detail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cems.audit import (
    MAX_DETAIL_KEYS,
    AuditAction,
    AuditEntry,
    AuditLog,
    AuditOutcome,
    PersonalData,
    new_audit_id,
    page_of,
    parse_key,
    personal_data_in,
)
from cems.console.access import Role
from pydantic import ValidationError

from tests.fakes.audit import InMemoryAuditStore

T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
CUSTOMER = "cus_0123456789abcdef0123456789abcdef"


class Ticking:
    """A clock that moves a second each time it is read."""

    def __init__(self, start: datetime = T0) -> None:
        self.at = start

    def __call__(self) -> datetime:
        now, self.at = self.at, self.at + timedelta(seconds=1)
        return now


def _log() -> tuple[AuditLog, InMemoryAuditStore]:
    store = InMemoryAuditStore()
    return AuditLog(store, now=Ticking()), store


def _record(log: AuditLog, **fields: Any) -> AuditEntry:
    arguments: dict[str, Any] = {
        "actor": "sato",
        "role": Role.ADMIN,
        "action": AuditAction.CUSTOMER_VIEW,
        "target": CUSTOMER,
        "source_ip": "203.0.113.7",
    }
    return log.record(**{**arguments, **fields})


# ------------------------------------------------------------------------------------ personal data


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("hanako@example.jp", PersonalData.EMAIL),
        ("mail: hanako.yamada+shop@mail.example.co.jp", PersonalData.EMAIL),
        ("hanako＠example.jp", PersonalData.EMAIL),
        ("U" + "4af4980629" * 3 + "ab", PersonalData.LINE_USER_ID),
        ("line:U0123456789abcdef0123456789abcdef", PersonalData.LINE_USER_ID),
        ("090-1234-5678", PersonalData.PHONE),
        ("tel 03-1234-5678", PersonalData.PHONE),
        ("03(1234)5678", PersonalData.PHONE),
        ("0120-123-456", PersonalData.PHONE),
        ("+81 90-1234-5678", PersonalData.PHONE),
        ("+81-3-1234-5678", PersonalData.PHONE),
        ("+819012345678", PersonalData.PHONE),
        ("09012345678", PersonalData.PHONE),
        ("0312345678", PersonalData.PHONE),
        ("０９０ー１２３４ー５６７８", PersonalData.PHONE),
        ("090 1234 5678", PersonalData.PHONE),
    ],
)
def test_personal_data_is_recognised(text: str, kind: PersonalData) -> None:
    assert personal_data_in(text) is kind


@pytest.mark.parametrize(
    "text",
    [
        CUSTOMER,
        "cus_1234567890abcdef1234567890abcdef",  # digits inside an id
        "post-purchase-tea",
        "arn:aws:iam::123456789012:role/CemsOperator",  # a 12-digit account id
        "203.0.113.7",
        "2001:db8::1",
        "2026-05-01T03:00:00.000Z",
        "2026-05-01 12:00",
        "v3",
        "12345",
        new_audit_id(T0, "request-1"),  # deterministic: every xdist worker collects the same id
    ],
)
def test_ids_times_and_addresses_are_not_personal_data(text: str) -> None:
    assert personal_data_in(text) is None


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("actor", "hanako@example.jp", "email address"),
        ("actor", "arn:aws:sts::123456789012:assumed-role/Operator/hanako@example.jp", "email address"),
        ("target", "U0123456789abcdef0123456789abcdef", "LINE user id"),
        ("target", "090-1234-5678", "phone number"),
        ("detail.customer", "hanako@example.jp", "email address"),
        ("detail.to", "line:U0123456789abcdef0123456789abcdef", "LINE user id"),
        ("detail.phone", "+81 90 1234 5678", "phone number"),
        ("detail.number", 9012345678, "phone number"),
    ],
)
def test_an_entry_with_personal_data_is_refused_naming_the_field_not_the_value(
    field: str, value: Any, kind: str
) -> None:
    log, store = _log()
    fields: dict[str, Any] = {}
    if field.startswith("detail."):
        fields["detail"] = {field.removeprefix("detail."): value}
    else:
        fields[field] = value
    with pytest.raises(ValidationError) as refused:
        _record(log, **fields)
    message = str(refused.value)
    assert field in message and kind in message
    assert str(value) not in message  # the refusal may be logged: it must not carry what it refused
    assert store.entries == {}


def test_a_detail_key_that_is_personal_data_is_refused() -> None:
    log, _ = _log()
    with pytest.raises(ValidationError, match="detail key"):
        _record(log, detail={"hanako@example.jp": True})


# -------------------------------------------------------------------------------------------- actions


@pytest.mark.parametrize("action", list(AuditAction))
def test_every_action_is_recordable(action: AuditAction) -> None:
    log, store = _log()
    entry = _record(log, action=action, outcome=AuditOutcome.REFUSED, detail={"reason": "x", "n": 2})
    assert store.entries == {entry.id: entry}
    assert entry.action is action and entry.outcome is AuditOutcome.REFUSED


def test_the_issue_lists_actions_all_exist() -> None:
    assert {
        "sign_in",
        "sign_in_failed",
        "scenario_upload",
        "scenario_delete",
        "test_send",
        "report_view",
        "customer_view",
        "customer_unmask",
        "customer_export",
        "customer_erase",
        "user_add",
        "user_role_change",
        "ip_refused",
        "audience_count",
    } <= {a.value for a in AuditAction}


def test_an_iam_principal_without_role_and_without_ip_is_recorded() -> None:
    log, _ = _log()
    entry = log.record(
        actor="arn:aws:iam::123456789012:role/CemsOperator",
        action=AuditAction.CUSTOMER_ERASE,
        source_ip=None,
        target=CUSTOMER,
    )
    assert entry.role is None and entry.source_ip == "-" and entry.outcome is AuditOutcome.ALLOWED


def test_an_entry_is_at_the_clock_s_time_in_utc() -> None:
    store = InMemoryAuditStore()
    entry = _record(AuditLog(store, now=lambda: T0.astimezone(timezone(timedelta(hours=9)))))
    assert entry.at == T0 and entry.at.tzinfo is UTC


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        AuditEntry(
            id=new_audit_id(T0),
            at=T0.replace(tzinfo=None),
            actor="sato",
            action=AuditAction.SIGN_IN,
            source_ip="203.0.113.7",
            outcome=AuditOutcome.ALLOWED,
        )


def test_an_id_must_carry_the_entry_s_time() -> None:
    with pytest.raises(ValidationError, match="id does not carry"):
        AuditEntry(
            id=new_audit_id(T0 + timedelta(seconds=1)),
            at=T0,
            actor="sato",
            action=AuditAction.SIGN_IN,
            source_ip="203.0.113.7",
            outcome=AuditOutcome.ALLOWED,
        )


# ------------------------------------------------------------------------------------- ids and order


def test_ids_are_time_ordered_and_distinct() -> None:
    times = [T0 + timedelta(milliseconds=n) for n in (0, 1, 999, 1000, 60_000)]
    ids = [new_audit_id(t) for t in times]
    assert ids == sorted(ids)
    assert len({new_audit_id(T0) for _ in range(200)}) == 200


def test_a_retried_request_writes_one_entry() -> None:
    log, store = _log()
    first = _record(log, at=T0, request_id="req-1")
    again = _record(log, at=T0, request_id="req-1")
    other = _record(log, at=T0, request_id="req-2")
    assert first.id == again.id != other.id
    assert store.appends == 3 and len(store.entries) == 2


def test_entries_come_newest_first_in_pages_with_a_cursor() -> None:
    log, _ = _log()
    recorded = [_record(log, detail={"n": n}) for n in range(7)]
    since, until = T0, T0 + timedelta(days=1)
    first = log.entries(since, until, limit=3)
    assert [e.detail["n"] for e in first.entries] == [6, 5, 4] and first.cursor is not None
    second = log.entries(since, until, limit=3, cursor=first.cursor)
    assert [e.detail["n"] for e in second.entries] == [3, 2, 1] and second.cursor is not None
    last = log.entries(since, until, limit=3, cursor=second.cursor)
    assert [e.detail["n"] for e in last.entries] == [0] and last.cursor is None
    assert parse_key(first.cursor) == (recorded[4].at, recorded[4].id)


def test_a_page_takes_no_more_entries_than_the_one_that_says_there_is_more() -> None:
    """The DynamoDB adapter hands page_of a generator that sends a Query as it is drawn on: an entry
    drawn past the one more would be a request for nothing."""
    log, store = _log()
    for n in range(6):
        _record(log, detail={"n": n})
    drawn: list[AuditEntry] = []

    def newest_first() -> Iterator[AuditEntry]:
        for entry in sorted(store.entries.values(), key=lambda e: e.key, reverse=True):
            drawn.append(entry)
            yield entry

    page = page_of(newest_first(), T0, T0 + timedelta(days=1), None, None, 2, None)
    assert [e.detail["n"] for e in page.entries] == [5, 4] and len(drawn) == 3
    drawn.clear()
    rest = page_of(newest_first(), T0, T0 + timedelta(days=1), None, None, 2, page.cursor)
    # Those down to the cursor's own are drawn and passed over (the adapter's Query, its BETWEEN
    # inclusive, starts at the cursor's own).
    assert [e.detail["n"] for e in rest.entries] == [3, 2] and len(drawn) == 5


def test_a_range_is_since_inclusive_until_exclusive_and_filters_by_actor_and_action() -> None:
    log, _ = _log()
    a = _record(log, actor="sato")  # T0
    b = _record(log, actor="suzuki", action=AuditAction.REPORT_VIEW)  # T0 + 1 s
    c = _record(log, actor="sato", action=AuditAction.REPORT_VIEW)  # T0 + 2 s
    assert [e.id for e in log.entries(T0, T0 + timedelta(seconds=2)).entries] == [b.id, a.id]
    assert [e.id for e in log.entries(T0, T0 + timedelta(days=1), actor="sato").entries] == [c.id, a.id]
    page = log.entries(T0, T0 + timedelta(days=1), action=AuditAction.REPORT_VIEW)
    assert [e.id for e in page.entries] == [c.id, b.id]
    assert log.entries(T0, T0 + timedelta(days=1), actor="sato", action=AuditAction.REPORT_VIEW).entries == [
        c
    ]


def test_a_bad_cursor_limit_or_naive_range_is_refused() -> None:
    log, _ = _log()
    with pytest.raises(ValueError, match="cursor"):
        log.entries(T0, T0 + timedelta(days=1), cursor="ENR#cus_x")
    with pytest.raises(ValueError, match="limit"):
        log.entries(T0, T0 + timedelta(days=1), limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        log.entries(T0.replace(tzinfo=None))


# --------------------------------------------------------------------------------------------- detail


def test_detail_is_bounded_in_keys_length_and_kind() -> None:
    log, _ = _log()
    _record(log, detail={f"k{n}": n for n in range(MAX_DETAIL_KEYS)})
    with pytest.raises(ValidationError, match="keys"):
        _record(log, detail={f"k{n}": n for n in range(MAX_DETAIL_KEYS + 1)})
    with pytest.raises(ValidationError, match="longer than"):
        _record(log, detail={"note": "x" * 201})
    with pytest.raises(ValidationError, match="snake_case"):
        _record(log, detail={"Not A Key": 1})
    with pytest.raises(ValidationError, match="not a count"):
        _record(log, detail={"n": 10**16})
    with pytest.raises(ValidationError):
        _record(log, detail={"nested": {"a": 1}})
    with pytest.raises(ValidationError):
        _record(log, detail={"ratio": 0.5})


def test_detail_keeps_strings_numbers_and_booleans_as_given() -> None:
    log, _ = _log()
    entry = _record(log, detail={"version": 3, "masked": True, "scenario": "post-purchase-tea"})
    assert entry.detail == {"version": 3, "masked": True, "scenario": "post-purchase-tea"}
    assert isinstance(entry.detail["masked"], bool)


def test_an_entry_is_frozen() -> None:
    log, _ = _log()
    entry = _record(log)
    with pytest.raises(ValidationError):
        entry.actor = "someone-else"  # type: ignore[misc]
