"""Every DynamoDB key format CEMS writes: the one module that spells a partition or sort key.

Customers table (pk, sk):
  ID#<kind>#<value>           / ID        an identity (anonymous id, user id, LINE user id) -> customer_id
  CUST#<customer_id>          / PROFILE   the profile
  NONCE#<sha256 of nonce>     / NONCE     a LINE account-link nonce, TTL
  OPTIN#<sha256 of address>   / OPTIN     the last double opt-in confirmation mail to an address, TTL
  SUPPRESS#<sha256 of address>/ SUPPRESS  a suppressed email address
  LOOKUP#<kind>#<sha256 of the normalised value> / CUST#<customer_id>   a contact lookup (cems.lookups):
      kind email or phone; one item per customer holding the value, found by a Query of the pk
  WEB#<customer_id> / MSG#<dispatch key>       an on-site message in the customer's inbox (cems.web), TTL
  WEBPREVIEW#<sha256 of preview token> / MSG#<dispatch key>   a test send's preview inbox, TTL
Events table (customer_id, sk):  <customer_id> / <ISO time>#<messageId>
Idempotency table (id):          collect#<site_id>#<messageId>
Sites table (write_key):         <public write key>, or secret#<sha256 of a secret server key>
Journeys table (pk, sk):
  SCENARIOS / <scenario id>                       a scenario's summary (the active list)
  SCN#<scenario id> / V#<version, 6 digits>       an immutable scenario version
  SCN#<scenario id> / ACTIVE                      the active pointer
  ENR#<customer> / <scenario id>                  an enrolment; due-index pk DUE#<shard>
  DATE#<customer> / <scenario id>                 a date trigger's schedule
  CAP#<customer> / <channel>#D#<day> | <channel>#W#<ISO week>   a frequency-cap counter (CapCounter)
  CAP#<customer> / total#D#<day> | total#W#<ISO week>           the total cap's counter (every channel)
  BCAST#<scenario id>#<run> / RUN | SEG#<n>      broadcast progress
  AUDCOUNT#<run> / RUN | SEG#<n, 5 digits>       a fanned-out audience count and its segments' tallies, TTL
  RPT#<scenario id>#<shard 0..15> / V#<version>#S#<step>#VAR#<variant>#G#<group>   report counters,
      a cell's counts spread over REPORT_SHARDS items; RPT#<scenario id> / (same sk) the layout
      before issue 11, still read
  RPTONCE#<sha256> / ONCE                          a counted fact's once marker, TTL
  RPTINDEX / <scenario id>                         a scenario that has report counters
Deliveries table (pk, sk):
  DISPATCH#<idempotency key> / PLAN | RCPT#<customer>            a LINE dispatch's plan, outcomes
  DISPATCH#<idempotency key> / <claim sort key>                    a delivery claim (claim_key):
      UNIT#<unit id> (LINE), EMAIL (email), CLAIM#<channel>#<unit> (any channel added later)
  LINK#<code> / LINK        a short link of a LINE text (cems.line.links): the signed click token, TTL
Audit table (pk, sk):
  AUDIT#<yyyy-mm-dd, UTC> / <ISO time>#<audit id>   an operator's audited action (cems.audit)
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

from cems.models import Channel
from cems.scenario.caps import TOTAL, CapCounter, CapPeriod, CapScope

# Partition-key prefixes and fixed sort keys. The structural tests read these to find key literals
# written anywhere else, so every new key format belongs here.
IDENTITY_PREFIX = "ID#"
IDENTITY_SK = "ID"
PROFILE_PREFIX = "CUST#"
PROFILE_SK = "PROFILE"
NONCE_PREFIX = "NONCE#"
NONCE_SK = "NONCE"
OPTIN_PREFIX = "OPTIN#"
OPTIN_SK = "OPTIN"
SUPPRESSION_PREFIX = "SUPPRESS#"
SUPPRESSION_SK = "SUPPRESS"
LOOKUP_PREFIX = "LOOKUP#"
WEB_INBOX_PREFIX = "WEB#"
WEB_PREVIEW_PREFIX = "WEBPREVIEW#"
WEB_MESSAGE_PREFIX = "MSG#"
MESSAGE_MARKER_PREFIX = "collect#"
SECRET_KEY_ITEM_PREFIX = "secret#"  # noqa: S105 - a key prefix, not a secret
SCENARIOS_PK = "SCENARIOS"
SCENARIO_PREFIX = "SCN#"
VERSION_PREFIX = "V#"
ACTIVE_SK = "ACTIVE"
ENROLMENT_PREFIX = "ENR#"
SCHEDULE_PREFIX = "DATE#"
DUE_SHARD_PREFIX = "DUE#"
CAP_PREFIX = "CAP#"
BROADCAST_PREFIX = "BCAST#"
BROADCAST_RUN_SK = "RUN"
BROADCAST_SEGMENT_PREFIX = "SEG#"
AUDIENCE_COUNT_PREFIX = "AUDCOUNT#"
REPORT_PREFIX = "RPT#"
REPORT_ONCE_PREFIX = "RPTONCE#"
REPORT_ONCE_SK = "ONCE"
REPORT_INDEX_PK = "RPTINDEX"
DISPATCH_PREFIX = "DISPATCH#"
PLAN_SK = "PLAN"
UNIT_PREFIX = "UNIT#"
RECIPIENT_PREFIX = "RCPT#"
EMAIL_SK = "EMAIL"
CLAIM_PREFIX = "CLAIM#"
SHORT_LINK_PREFIX = "LINK#"
SHORT_LINK_SK = "LINK"
AUDIT_PREFIX = "AUDIT#"

KEY_LITERALS = frozenset(
    {
        IDENTITY_PREFIX,
        IDENTITY_SK,
        PROFILE_PREFIX,
        PROFILE_SK,
        NONCE_PREFIX,
        NONCE_SK,
        OPTIN_PREFIX,
        OPTIN_SK,
        SUPPRESSION_PREFIX,
        SUPPRESSION_SK,
        LOOKUP_PREFIX,
        WEB_INBOX_PREFIX,
        WEB_PREVIEW_PREFIX,
        WEB_MESSAGE_PREFIX,
        MESSAGE_MARKER_PREFIX,
        SECRET_KEY_ITEM_PREFIX,
        SCENARIOS_PK,
        SCENARIO_PREFIX,
        VERSION_PREFIX,
        ACTIVE_SK,
        ENROLMENT_PREFIX,
        SCHEDULE_PREFIX,
        DUE_SHARD_PREFIX,
        CAP_PREFIX,
        BROADCAST_PREFIX,
        BROADCAST_RUN_SK,
        BROADCAST_SEGMENT_PREFIX,
        AUDIENCE_COUNT_PREFIX,
        REPORT_PREFIX,
        REPORT_ONCE_PREFIX,
        REPORT_ONCE_SK,
        REPORT_INDEX_PK,
        DISPATCH_PREFIX,
        PLAN_SK,
        UNIT_PREFIX,
        RECIPIENT_PREFIX,
        EMAIL_SK,
        CLAIM_PREFIX,
        SHORT_LINK_PREFIX,
        SHORT_LINK_SK,
        AUDIT_PREFIX,
    }
)
"""Every prefix and fixed key above: what no other module may spell."""

# What stands between a cap counter's channel and its period label in its sort key.
CAP_PERIOD_MARKS = {CapPeriod.DAY: "#D#", CapPeriod.WEEK: "#W#"}

KEY_INFIXES = frozenset(CAP_PERIOD_MARKS.values())
"""Pieces of a sort key that no other module may spell anywhere in a string."""

Key = dict[str, Any]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ customers table


def identity_pk(kind: str, value: str) -> str:
    return f"{IDENTITY_PREFIX}{kind}#{value}"


def identity_key(kind: str, value: str) -> Key:
    return {"pk": {"S": identity_pk(kind, value)}, "sk": {"S": IDENTITY_SK}}


def identity_from_pk(pk: str) -> tuple[str, str]:
    """(kind, value) of an identity item's pk."""
    _, kind, value = pk.split("#", 2)
    return kind, value


def profile_key(customer_id: str) -> Key:
    return {"pk": {"S": f"{PROFILE_PREFIX}{customer_id}"}, "sk": {"S": PROFILE_SK}}


# A customer's choice about one topic (cems.topics) is an attribute of its own on the profile item:
# SET on it needs no map to exist first (profiles written before topics have none) and never
# overlaps another topic's, so concurrent choices about two topics both land.
_TOPIC_ATTRIBUTE = "topic#"


def topic_attribute(topic: str) -> str:
    return f"{_TOPIC_ATTRIBUTE}{topic}"


def topic_of_attribute(name: str) -> str | None:
    """The topic a profile item's attribute holds the choice about, or None for another attribute."""
    return name[len(_TOPIC_ATTRIBUTE) :] if name.startswith(_TOPIC_ATTRIBUTE) else None


def nonce_key(nonce: str) -> Key:
    """Only the nonce's SHA-256 is stored, so a table read gives no usable link."""
    return {"pk": {"S": f"{NONCE_PREFIX}{_sha256(nonce)}"}, "sk": {"S": NONCE_SK}}


def optin_key(hashed_address: str) -> Key:
    return {"pk": {"S": f"{OPTIN_PREFIX}{hashed_address}"}, "sk": {"S": OPTIN_SK}}


def suppression_pk(hashed_address: str) -> str:
    return f"{SUPPRESSION_PREFIX}{hashed_address}"


def suppression_key(hashed_address: str) -> Key:
    return {"pk": {"S": suppression_pk(hashed_address)}, "sk": {"S": SUPPRESSION_SK}}


def lookup_pk(kind: str, hashed_value: str) -> str:
    return f"{LOOKUP_PREFIX}{kind}#{hashed_value}"


def lookup_key(kind: str, hashed_value: str, customer_id: str) -> Key:
    """A contact lookup: the sort key names the customer, so two customers giving the same address
    (not merged: a shared family address) each have their own item and never overwrite each other."""
    return {"pk": {"S": lookup_pk(kind, hashed_value)}, "sk": {"S": lookup_sk(customer_id)}}


def lookup_sk(customer_id: str) -> str:
    return f"{PROFILE_PREFIX}{customer_id}"


def customer_of_lookup_sk(sk: str) -> str:
    return sk.removeprefix(PROFILE_PREFIX)


# ------------------------------------------------------------------- events, idempotency, sites


def web_inbox_pk(owner_id: str, preview: bool) -> str:
    """An on-site inbox: a customer's (`WEB#<customer>`, one Query reads it), or a test send's
    preview (`WEBPREVIEW#<sha256 of its token>`)."""
    return f"{WEB_PREVIEW_PREFIX if preview else WEB_INBOX_PREFIX}{owner_id}"


def web_message_key(owner_id: str, preview: bool, dispatch_key: str) -> Key:
    return {"pk": {"S": web_inbox_pk(owner_id, preview)}, "sk": {"S": f"{WEB_MESSAGE_PREFIX}{dispatch_key}"}}


def web_message_sk_prefix() -> str:
    return WEB_MESSAGE_PREFIX


def event_sk(timestamp_iso: str, message_id: str) -> str:
    return f"{timestamp_iso}#{message_id}"


def message_marker_id(site_id: str, message_id: str) -> str:
    return f"{MESSAGE_MARKER_PREFIX}{site_id}#{message_id}"


def secret_key_item_key(secret_key: str) -> str:
    """Sites table key of a secret server key: only its SHA-256 is stored, so a leaked table row or
    backup is no usable key."""
    return SECRET_KEY_ITEM_PREFIX + _sha256(secret_key)


# ------------------------------------------------------------------------------ journeys table


def scenario_summary_key(scenario_id: str) -> Key:
    return {"pk": {"S": SCENARIOS_PK}, "sk": {"S": scenario_id}}


def scenario_pk(scenario_id: str) -> str:
    return f"{SCENARIO_PREFIX}{scenario_id}"


def version_sk(version: int) -> str:
    return f"{VERSION_PREFIX}{version:06d}"


def version_from_sk(sk: str) -> int:
    return int(sk.removeprefix(VERSION_PREFIX))


def version_key(scenario_id: str, version: int) -> Key:
    return {"pk": {"S": scenario_pk(scenario_id)}, "sk": {"S": version_sk(version)}}


def active_key(scenario_id: str) -> Key:
    return {"pk": {"S": scenario_pk(scenario_id)}, "sk": {"S": ACTIVE_SK}}


def enrolment_pk(customer_id: str) -> str:
    return f"{ENROLMENT_PREFIX}{customer_id}"


def enrolment_key(customer_id: str, scenario_id: str) -> Key:
    return {"pk": {"S": enrolment_pk(customer_id)}, "sk": {"S": scenario_id}}


def schedule_pk(customer_id: str) -> str:
    return f"{SCHEDULE_PREFIX}{customer_id}"


def schedule_key(customer_id: str, scenario_id: str) -> Key:
    return {"pk": {"S": schedule_pk(customer_id)}, "sk": {"S": scenario_id}}


def is_schedule_pk(pk: str) -> bool:
    return pk.startswith(SCHEDULE_PREFIX)


def customer_of_journey_pk(pk: str) -> str:
    """The customer id of an ENR#/DATE# partition key."""
    return pk.split("#", 1)[1]


def due_shard_name(shard: int) -> str:
    return f"{DUE_SHARD_PREFIX}{shard}"


def cap_pk(customer_id: str) -> str:
    return f"{CAP_PREFIX}{customer_id}"


def cap_sk(counter: CapCounter) -> str:
    """`<channel>#D#<yyyy-mm-dd>` or `<channel>#W#<yyyy-Www>`: the sort keys counters have always
    been written under, so a deployed stack's counters go on counting across a deploy. The total
    cap's are `total#D#...` / `total#W#...`, in the same partition: read in the same BatchGetItem
    and taken in the same transaction as the channel's."""
    return f"{counter.channel}{CAP_PERIOD_MARKS[counter.period]}{counter.label}"


def cap_counter_of_sk(sk: str) -> CapCounter:
    """The counter a `CAP#<customer>` item counts, from its sort key (ValueError if it is no cap
    counter's, or its channel is one CEMS no longer has)."""
    for period, mark in CAP_PERIOD_MARKS.items():
        channel, found, label = sk.partition(mark)
        if found and channel and label:
            scope: CapScope = TOTAL if channel == TOTAL.value else Channel(channel)
            return CapCounter(scope, period, label)
    raise ValueError(f"not a cap counter's sort key: {sk!r}")


def cap_key(customer_id: str, counter: CapCounter) -> Key:
    return {"pk": {"S": cap_pk(customer_id)}, "sk": {"S": cap_sk(counter)}}


def journey_partitions(customer_id: str) -> dict[str, str]:
    """A customer's partitions in the Journeys table, by what they hold (erasure deletes them)."""
    return {
        "enrolments": enrolment_pk(customer_id),
        "schedules": schedule_pk(customer_id),
        "caps": cap_pk(customer_id),
    }


def broadcast_run_key(scenario_id: str, run: str) -> Key:
    return {"pk": {"S": f"{BROADCAST_PREFIX}{scenario_id}#{run}"}, "sk": {"S": BROADCAST_RUN_SK}}


def broadcast_segment_key(scenario_id: str, run: str, segment: int) -> Key:
    return {
        "pk": {"S": f"{BROADCAST_PREFIX}{scenario_id}#{run}"},
        "sk": {"S": f"{BROADCAST_SEGMENT_PREFIX}{segment}"},
    }


def audience_run_pk(run: str) -> str:
    return f"{AUDIENCE_COUNT_PREFIX}{run}"


def audience_run_key(run: str) -> Key:
    return {"pk": {"S": audience_run_pk(run)}, "sk": {"S": BROADCAST_RUN_SK}}


def audience_segment_key(run: str, segment: int) -> Key:
    """Zero-padded, so a Query of the run's partition reads its segments in order (up to 99,999)."""
    return {"pk": {"S": audience_run_pk(run)}, "sk": {"S": f"{BROADCAST_SEGMENT_PREFIX}{segment:05d}"}}


def audience_segment_sk_prefix() -> str:
    return BROADCAST_SEGMENT_PREFIX


# A report cell's counts are spread over this many items, each under its own partition key
# (`RPT#<scenario>#<shard>`): see report_counters.py for why. Readers read every shard, so the number
# may grow in a later deploy but never shrink (counts in a dropped shard would no longer be read).
REPORT_SHARDS = 16


def report_pk(scenario_id: str) -> str:
    """The partition every cell of a scenario was counted in before issue 11 (one item per cell):
    no longer written, still read (stages have cells there)."""
    return f"{REPORT_PREFIX}{scenario_id}"


def report_shard_pk(scenario_id: str, shard: int) -> str:
    """The partition of one shard of a scenario's cells. Scenario ids hold no `#` (cems.scenario
    .values), so no scenario's unsharded partition can be another's shard."""
    if not 0 <= shard < REPORT_SHARDS:
        raise ValueError(f"report shard {shard} outside 0..{REPORT_SHARDS - 1}")
    return f"{REPORT_PREFIX}{scenario_id}#{shard}"


def report_cell_sk(
    version: int, step: str, variant: str, group: str, channel: str | None = None, day: str | None = None
) -> str:
    """A report cell's sort key. A cell with a channel or a day (counted since issue 12) ends in
    `#C#<channel or ->#D#<day or ->`; one with neither keeps the key it had before, so cells counted
    then are still read as theirs. No two cells share a key though variant names are free text: the
    suffix is read from the right (a day is fixed-length, a channel name has no `#`), and a key
    without it ends in the group, never in a day."""
    sk = f"{VERSION_PREFIX}{version:06d}#S#{step}#VAR#{variant}#G#{group}"
    if channel is None and day is None:
        return sk
    return f"{sk}#C#{channel or '-'}#D#{day or '-'}"


def report_once_key(scenario_id: str, once: str, part: int | None = None) -> Key:
    """A counted fact's marker. `part` numbers the transactions an aggregated count too large for
    one is split into (each under its own marker); a NUL cannot occur in a marker name given by a
    caller, so no part's marker is another fact's. Without a part: the key `once` has always had."""
    named = f"{scenario_id}|{once}" if part is None else f"{scenario_id}|{once}\x00{part}"
    return {
        "pk": {"S": f"{REPORT_ONCE_PREFIX}{_sha256(named)}"},
        "sk": {"S": REPORT_ONCE_SK},
    }


# ---------------------------------------------------------------------------- deliveries table


def dispatch_pk(idempotency_key: str) -> str:
    return f"{DISPATCH_PREFIX}{idempotency_key}"


def dispatch_key(idempotency_key: str, sk: str) -> Key:
    return {"pk": {"S": dispatch_pk(idempotency_key)}, "sk": {"S": sk}}


def unit_sk(unit_id: str) -> str:
    return UNIT_PREFIX + unit_id


def recipient_sk(customer_id: str) -> str:
    return RECIPIENT_PREFIX + customer_id


def claim_key(channel: str, idempotency_key: str, unit: str) -> Key:
    """Where a channel's delivery claim is: `DISPATCH#<key>` / `<channel's sort key>`. LINE's and
    email's keep the sort keys their items were written with before the claim store was shared
    (`UNIT#<unit>`, `EMAIL`): items live until their TTL, and an in-flight dispatch must find its
    claim after a deploy. A channel added later claims `CLAIM#<channel>#<unit>`."""
    if channel == "line":
        return dispatch_key(idempotency_key, unit_sk(unit))
    if channel == "email":
        return dispatch_key(idempotency_key, EMAIL_SK)
    return dispatch_key(idempotency_key, f"{CLAIM_PREFIX}{channel}#{unit}")


def short_link_key(code: str) -> Key:
    """A short link's item: one partition per code, so the click tracker's lookup is one GetItem."""
    return {"pk": {"S": f"{SHORT_LINK_PREFIX}{code}"}, "sk": {"S": SHORT_LINK_SK}}


def audit_day_pk(day: date) -> str:
    """The partition of one UTC day's audit entries: a time range is a Query per day, never a Scan."""
    return f"{AUDIT_PREFIX}{day.isoformat()}"
