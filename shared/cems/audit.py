"""The audit log of the operator console (issue 12): who did what, when and from where; ids only.

Every audited operator action (sign-in, scenario upload and delete, test sends, report and customer
views, unmask, export, erase, user and role changes, requests the IP allow-list refused) leaves exactly
one `AuditEntry`, written by `AuditLog.record` through the `AuditStore` port. An entry names its actor,
target and details by id and never carries personal data: the model refuses any value that looks like
an email address, a phone number or a LINE user id, naming the field (and never echoing the value, so
the refusal itself cannot leak it into a log). A person's name cannot be recognised by pattern; callers
pass ids (`cus_...`, scenario ids, operator user names), which is why `detail` is small and bounded.

Entry ids are time-ordered (`aud_<UTC time to the millisecond>_<random letters>`), so a time range
is read by key, newest first, without scanning (cems.adapters.dynamodb.audit). Entries are
append-only: the store's `append` writes an id once (a retried request that passes the same id and
time writes nothing more) and nothing in the port updates or deletes an entry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from cems import clock
from cems.console.access import Role


class AuditAction(StrEnum):
    """What an operator did (or tried to do)."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_OUT = "sign_out"
    SCENARIO_UPLOAD = "scenario_upload"
    SCENARIO_DELETE = "scenario_delete"
    TEST_SEND = "test_send"
    REPORT_VIEW = "report_view"
    AUDIENCE_COUNT = "audience_count"
    CUSTOMER_VIEW = "customer_view"
    CUSTOMER_UNMASK = "customer_unmask"
    CUSTOMER_EXPORT = "customer_export"
    CUSTOMER_ERASE = "customer_erase"
    USER_ADD = "user_add"
    USER_ROLE_CHANGE = "user_role_change"
    USER_REMOVE = "user_remove"
    IP_REFUSED = "ip_refused"


class AuditOutcome(StrEnum):
    ALLOWED = "allowed"  # done (or shown)
    REFUSED = "refused"  # not permitted: role, IP allow-list, wrong password
    FAILED = "failed"  # permitted, but it did not work


# Bounds of `detail`: a few ids and counts, never a document (a document could hold anything).
MAX_DETAIL_KEYS = 12
MAX_DETAIL_TEXT = 200
MAX_DETAIL_NUMBER = 10**15
ID_PREFIX = "aud_"
_SUFFIX_LETTERS = string.ascii_lowercase
# 14 lowercase letters: 26**14 (about 6.5e19) ids per millisecond. Letters, not hex: a run of ten
# digits in an id would itself look like a phone number to the personal-data check.
_SUFFIX_LENGTH = 14
AUDIT_ID = re.compile(rf"^{ID_PREFIX}\d{{8}}T\d{{9}}Z_[a-z]{{{_SUFFIX_LENGTH}}}$")
_DETAIL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# An IP address (v4 or v6, as API Gateway reports sourceIp), or "-" when there is none (the CLI).
_SOURCE_IP = re.compile(r"^(-|[0-9A-Fa-f:.]{2,45})$")

# ----------------------------------------------------------------------------------- personal data

_EMAIL = re.compile(r"[\w.+\-]+[@＠][\w\-]+(?:[.．][\w\-]+)+")
_LINE_USER_ID = re.compile(r"U[0-9a-fA-F]{32}")
# Next to a letter, digit or underscore a run of digits is part of an id (`cus_<hex>`), not a number.
_WORD = r"0-9A-Za-z_"
# Separators Japanese phone numbers are written with: hyphens and dashes (half and full width, and the
# long-vowel mark typed for one), spaces, and the brackets around an area code.
_SEP = r"[\s\-‐‑–—−－ー()（）]"
_PHONE_WRITTEN = re.compile(
    rf"(?<![{_WORD}])(?:[+＋]81{_SEP}*|[0０])\d{{1,4}}(?:{_SEP}{{1,2}}\d{{1,4}}){{1,3}}"
)
_PHONE_DIGITS = re.compile(rf"(?<![{_WORD}+＋])(?:[+＋]81\d{{9,10}}|\d{{10,11}})(?![{_WORD}])")


class PersonalData(StrEnum):
    EMAIL = "an email address"
    PHONE = "a phone number"
    LINE_USER_ID = "a LINE user id"


def personal_data_in(text: str) -> PersonalData | None:
    """What kind of personal data `text` seems to contain, if any: an email address, a LINE user id
    (U + 32 hex), or a phone number (090-1234-5678, 03(1234)5678, +81 90 1234 5678, or 10-11 digits
    on their own). Digits inside an id (`cus_0123456789abc...`) are not a phone number."""
    if _EMAIL.search(text):
        return PersonalData.EMAIL
    if _LINE_USER_ID.search(text):
        return PersonalData.LINE_USER_ID
    if _PHONE_DIGITS.search(text):
        return PersonalData.PHONE
    for found in _PHONE_WRITTEN.finditer(text):
        written = found.group()
        digits = sum(ch.isdigit() for ch in written)
        international = written.lstrip("+＋").startswith("81") and written[:1] in "+＋"
        if (international and 11 <= digits <= 12) or (not international and 10 <= digits <= 11):
            return PersonalData.PHONE
    return None


WITHHELD = "(withheld)"


def withheld_if_personal(text: str) -> str:
    """`text` for an entry, or "(withheld)" when it looks like personal data: a name someone typed to
    sign in, or an IAM session named after an email address, must not put it in the log."""
    return WITHHELD if personal_data_in(text) is not None else text


def _refuse_personal_data(field: str, value: object) -> None:
    text = value if isinstance(value, str) else str(value) if isinstance(value, int) else None
    if text is None:
        return
    kind = personal_data_in(text)
    if kind is not None:
        # The value is not repeated: this message may well be logged.
        raise ValueError(f"{field} looks like it contains {kind.value}; an audit entry carries ids only")


# ------------------------------------------------------------------------------------------- entries

DetailValue = StrictStr | StrictBool | StrictInt
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class AuditEntry(BaseModel):
    """One audited action. `actor` is the operator's user name or the caller's IAM principal ARN;
    `target` the id acted on (a scenario id, `cus_...`, an operator user name)."""

    # hide_input_in_errors: a refused entry's error must not print the personal data it refused.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    id: Annotated[str, Field(pattern=AUDIT_ID.pattern)]
    at: datetime
    actor: ShortText
    role: Role | None = None
    action: AuditAction
    target: ShortText | None = None
    source_ip: Annotated[str, Field(pattern=_SOURCE_IP.pattern)]
    outcome: AuditOutcome
    detail: dict[str, DetailValue] = Field(default_factory=dict)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        # To the millisecond, as ids and stored times are: an entry reads back equal to what was written.
        return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)

    @field_validator("detail")
    @classmethod
    def _bounded(cls, detail: dict[str, Any]) -> dict[str, Any]:
        if len(detail) > MAX_DETAIL_KEYS:
            raise ValueError(f"detail has {len(detail)} keys; at most {MAX_DETAIL_KEYS}")
        for key, value in detail.items():
            if not _DETAIL_KEY.match(key):
                raise ValueError(f"detail key {key[:40]!r} is not a short snake_case name")
            if isinstance(value, str) and len(value) > MAX_DETAIL_TEXT:
                raise ValueError(f"detail.{key} is longer than {MAX_DETAIL_TEXT} characters")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_DETAIL_NUMBER:
                raise ValueError(f"detail.{key} is not a count (beyond ±{MAX_DETAIL_NUMBER})")
        return detail

    @model_validator(mode="after")
    def _no_personal_data(self) -> Self:
        for field in ("id", "actor", "target", "source_ip"):
            _refuse_personal_data(field, getattr(self, field))
        for key, value in self.detail.items():
            _refuse_personal_data(f"detail key {key!r}", key)
            _refuse_personal_data(f"detail.{key}", value)
        if self.id[len(ID_PREFIX) : len(ID_PREFIX) + 18] != _id_time(self.at):
            raise ValueError("id does not carry the entry's time (at)")
        return self

    @property
    def key(self) -> str:
        """The entry's place in time order: `<ISO time>#<id>` (the stores' sort key and cursors)."""
        return f"{clock.iso(self.at)}#{self.id}"


def _id_time(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y%m%dT%H%M%S") + f"{at.microsecond // 1000:03d}"


def new_audit_id(at: datetime, request_id: str | None = None) -> str:
    """A time-ordered id. With `request_id` (API Gateway's, say) the suffix is derived from it, so a
    retried request recorded with the same time gets the same id and the store writes it once."""
    if request_id is None:
        suffix = "".join(secrets.choice(_SUFFIX_LETTERS) for _ in range(_SUFFIX_LENGTH))
    else:
        number = int.from_bytes(hashlib.sha256(request_id.encode("utf-8")).digest(), "big")
        letters = []
        for _ in range(_SUFFIX_LENGTH):
            number, index = divmod(number, len(_SUFFIX_LETTERS))
            letters.append(_SUFFIX_LETTERS[index])
        suffix = "".join(letters)
    return f"{ID_PREFIX}{_id_time(at)}Z_{suffix}"


# ------------------------------------------------------------------------------------------ cursors

_KEY = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)#(" + AUDIT_ID.pattern[1:-1] + r")$")


def parse_key(key: str) -> tuple[datetime, str]:
    """(time, id) of an entry key used as a cursor; ValueError for anything else (a cursor may come
    from the command line)."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError("not an audit cursor (<ISO time>#aud_...)")
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")), match.group(2)


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; `cursor` (the last entry's key) asks for the next page, None at the end."""

    entries: list[AuditEntry]
    cursor: str | None = None


def page_of(
    newest_first: Iterable[AuditEntry],
    since: datetime,
    until: datetime,
    actor: str | None,
    action: AuditAction | None,
    limit: int,
    cursor: str | None,
) -> AuditPage:
    """The page `AuditStore.query` answers, picked from entries in key order, newest first: since <= at
    < until to the millisecond, after `cursor`, the actor's and the action's if given; `limit` of them,
    with a cursor when one more was found. Every store answers through this one rule, so the in-memory
    one cannot drift from DynamoDB's. It takes no more entries than that one more: a store may pass a
    generator that reads as it goes (the DynamoDB adapter's Query per day) or all it holds (the fake)."""
    if cursor is not None:
        parse_key(cursor)
    # Compared as keys, as DynamoDB's key condition compares them: `<ISO time>#<id>` is above the ISO
    # time alone, so an entry at `since` is in and one at `until` is out.
    low, high = clock.iso(since), clock.iso(until)
    found: list[AuditEntry] = []
    for entry in newest_first:
        key = entry.key
        if key < low:
            break  # newest first: the rest are older still
        if key >= high or (cursor is not None and key >= cursor):
            continue
        if (actor is not None and entry.actor != actor) or (action is not None and entry.action != action):
            continue
        found.append(entry)
        if len(found) > limit:
            page = found[:limit]
            return AuditPage(page, page[-1].key)
    return AuditPage(found)


class AuditStore(Protocol):
    """Where audit entries are kept: append-only, read by time range newest first."""

    def append(self, entry: AuditEntry) -> bool:
        """Writes the entry unless its id is already there; False when it was (a retry)."""
        ...

    def query(
        self,
        since: datetime,
        until: datetime,
        actor: str | None = None,
        action: AuditAction | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """Entries with since <= at < until, to the millisecond (and the actor and action, if given),
        newest first, at most `limit`; `cursor` continues after the page that returned it."""
        ...


# ------------------------------------------------------------------------------------------ service

MAX_PAGE = 500


class AuditLog:
    """Records audited actions and lists them (rules over the AuditStore port and the one clock)."""

    def __init__(self, store: AuditStore, now: Callable[[], datetime] = clock.now) -> None:
        self.store = store
        self.now = now

    def record(
        self,
        *,
        actor: str,
        action: AuditAction,
        source_ip: str | None,
        outcome: AuditOutcome = AuditOutcome.ALLOWED,
        role: Role | None = None,
        target: str | None = None,
        detail: Mapping[str, str | int | bool] | None = None,
        at: datetime | None = None,
        request_id: str | None = None,
    ) -> AuditEntry:
        """Writes one entry and returns it. `at` and `request_id` (the request's own time and id) make
        a retried request write nothing more; without them each call is a new entry. A value that
        looks like personal data raises pydantic's ValidationError naming the field (never the value)."""
        when = (at or self.now()).astimezone(UTC)
        entry = AuditEntry(
            id=new_audit_id(when, request_id),
            at=when,
            actor=actor,
            role=role,
            action=action,
            target=target,
            source_ip=source_ip or "-",
            outcome=outcome,
            detail=dict(detail or {}),
        )
        self.store.append(entry)
        return entry

    def entries(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        actor: str | None = None,
        action: AuditAction | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """A page of entries in [since, until) (until: now), newest first."""
        if since.tzinfo is None or (until is not None and until.tzinfo is None):
            raise ValueError("since and until must be timezone-aware")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        if cursor is not None:
            parse_key(cursor)
        return self.store.query(
            since, until or self.now(), actor=actor, action=action, limit=limit, cursor=cursor
        )
