"""Finding a customer, showing them masked, and exporting everything CEMS holds about them (issue 12).

`CustomerDirectory` answers the operator console, the admin API (GET /admin/customers...) and
`cems customer find|export` alike, through the CustomerRecords port: every read is a GetItem or a
Query of one partition, never a Scan (docs/customers.md).

- find: by email or phone (their hashed lookups, cems.lookups), by LINE user id, the shop's user id
  or an anonymous id (their identity items), answering the surviving customer of a merge.
- view: the profile (masked unless asked otherwise, cems.masking) and a timeline: the latest events
  of every id of the person, newest first, and their journeys.
- export: one JSON document for a disclosure request under the APPI (開示請求): every profile of the
  person unmasked, identities, consent, events, journeys, and suppression entries of their addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cems import clock
from cems.identity import IdentityKey, IdentityKind, identities_of
from cems.lookups import ContactKind, contact_hash, contact_hashes
from cems.masking import mask_identifier, mask_trait, masked_profile
from cems.models import Profile, StoredEvent
from cems.ports import CustomerRecords

EXPORT_FORMAT = "cems.customer-export/1"
# The latest events a view shows (of the person, across their ids): a timeline to read, not a dump.
TIMELINE_EVENTS = 50
# The events an export holds at most, the latest kept: the admin API answers through Lambda, whose
# response is at most 6 MB. Events live only as long as the event retention (EVENT_RETENTION_DAYS)
# anyway; `events_complete` says whether any were left out.
MAX_EXPORT_EVENTS = 3000
# What an enrolment shows in a view: where the customer is in a journey and what was sent, nothing
# personal (an export has the whole item).
_ENROLMENT_FIELDS = (
    "scenario_id",
    "version",
    "state",
    "step_id",
    "variant",
    "holdout",
    "entry",
    "entered_at",
    "ended_at",
    "exit_reason",
    "sends",
    "last_send_at",
    "step_sends",
)
# Told in every view and export: what CEMS does not list per customer, and why.
NOT_INCLUDED = {
    "messages": (
        "Each journey keeps its latest messages (step, channel, when; engine.MESSAGES_KEPT, kept "
        "from issue 12 on), listed under messages; earlier ones are counted only (sends, step_sends, "
        "last_send_at). Delivery records are kept per dispatch, not per customer. Delivery, open, "
        "click, bounce and unsubscribe events are in the events."
    ),
    "report_counters": "Report counters are counts per scenario step and hold no one's data.",
    "message_contents": (
        "Message contents are rendered at send time from the scenario and the profile, and not kept "
        "(on-site messages excepted: each waits rendered in the inbox until it expires, under "
        "web_messages)."
    ),
}


class LookupKind(StrEnum):
    """What a customer is looked up by."""

    EMAIL = "email"
    PHONE = "phone"
    LINE = "line"  # the LINE user id
    USER = "user"  # the shop's user id
    ANONYMOUS = "anonymous"  # an anonymous id (a browser)


_CONTACTS = {LookupKind.EMAIL: ContactKind.EMAIL, LookupKind.PHONE: ContactKind.PHONE}
_IDENTITIES = {
    LookupKind.LINE: IdentityKind.LINE,
    LookupKind.USER: IdentityKind.USER,
    LookupKind.ANONYMOUS: IdentityKind.ANONYMOUS,
}


class UnusableLookupValue(ValueError):
    """The value cannot be looked up: no email address, no phone number, empty."""

    def __init__(self, kind: LookupKind) -> None:
        super().__init__(f"not a {kind.value} that can be looked up")
        self.kind = kind


@dataclass(frozen=True)
class Found:
    """A customer found: the surviving id (merges followed) and its profile."""

    customer_id: str
    profile: Profile

    def masked(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "profile": masked_profile(self.profile)}


class CustomerDirectory:
    def __init__(
        self,
        records: CustomerRecords,
        *,
        timeline_events: int = TIMELINE_EVENTS,
        max_export_events: int = MAX_EXPORT_EVENTS,
    ) -> None:
        self.records = records
        self.timeline_events = timeline_events
        self.max_export_events = max_export_events

    # -- find -----------------------------------------------------------------------------------------

    def find(self, kind: LookupKind, value: str) -> list[Found]:
        """The customers `value` names, each once (ids merged into another answer the survivor), in
        id order. Reads: the lookup (a Query) or the identity item (a GetItem), then a profile
        GetItem per customer. Raises UnusableLookupValue for a value no lookup can hold."""
        if not value.strip():
            raise UnusableLookupValue(kind)
        if kind in _CONTACTS:
            hashed = contact_hash(_CONTACTS[kind], value)
            if hashed is None:
                raise UnusableLookupValue(kind)
            ids = self.records.customers_with_contact(_CONTACTS[kind], hashed)
        else:
            owner = self.records.identity_owner(IdentityKey(_IDENTITIES[kind], value))
            ids = [] if owner is None else [owner]
        found: dict[str, Found] = {}
        for customer_id in ids:
            profile = self.records.profile(customer_id)
            if profile is not None:  # a lookup of an id erased a moment ago
                found.setdefault(profile.customer_id, Found(profile.customer_id, profile))
        return [found[c] for c in sorted(found)]

    # -- view -----------------------------------------------------------------------------------------

    def view(self, customer_id: str, *, unmasked: bool = False) -> dict[str, Any] | None:
        """The person `customer_id` belongs to: the surviving profile (masked unless `unmasked`) and a
        timeline of their latest events (newest first, at most `timeline_events`) and journeys;
        None when there is no such customer."""
        profiles = self.records.person(customer_id)
        if not profiles:
            return None
        profile, ids = profiles[0], _ids_of(customer_id, profiles)
        events = sorted(
            (e for i in ids for e in self.records.events_of(i, self.timeline_events)),
            key=lambda e: (e.timestamp, e.message_id),
            reverse=True,
        )[: self.timeline_events]
        records = [(i, record) for i in ids for record in self.records.enrolments(i)]
        enrolments = [
            {name: record[name] for name in _ENROLMENT_FIELDS if name in record} | {"customer_id": i}
            for i, record in records
        ]
        # The messages the journeys sent (each journey keeps its latest), newest first.
        messages = sorted(
            (
                {
                    "at": message.get("at"),
                    "scenario_id": record.get("scenario_id"),
                    "version": record.get("version"),
                    "step_id": message.get("step_id"),
                    "channel": message.get("channel"),
                }
                for _, record in records
                for message in record.get("messages") or []
            ),
            key=lambda m: str(m["at"]),
            reverse=True,
        )
        return {
            "customer_id": profile.customer_id,
            "customer_ids": ids,
            "masked": not unmasked,
            "profile": profile.model_dump(mode="json") if unmasked else masked_profile(profile),
            "timeline": {
                "events": [_event(e) if unmasked else _event_summary(e) for e in events],
                "events_shown_at_most": self.timeline_events,
                "enrolments": sorted(enrolments, key=lambda r: str(r.get("entered_at", "")), reverse=True),
                "messages": messages,
            },
            "not_included": NOT_INCLUDED,
        }

    # -- export ---------------------------------------------------------------------------------------

    def export(self, customer_id: str, at: datetime | None = None) -> dict[str, Any] | None:
        """Everything CEMS holds about the person, unmasked, as one JSON document (docs/customers.md,
        "Export"); None when there is no such customer."""
        profiles = self.records.person(customer_id)
        if not profiles:
            return None
        ids = _ids_of(customer_id, profiles)
        events = sorted(
            (e for i in ids for e in self.records.events_of(i, self.max_export_events + 1)),
            key=lambda e: (e.timestamp, e.message_id),
        )
        complete = len(events) <= self.max_export_events
        hashes = sorted(
            {h for p in profiles for k, h in contact_hashes(p.traits).items() if k is ContactKind.EMAIL}
        )
        suppression = []
        for hashed in hashes:
            entry = self.records.suppression_entry(hashed)
            if entry is not None:
                suppression.append({"address_hash": hashed, **entry})
        return {
            "format": EXPORT_FORMAT,
            "exported_at": clock.iso(at or clock.now()),
            "customer_id": profiles[0].customer_id,
            "customer_ids": ids,
            "profiles": [p.model_dump(mode="json") for p in profiles],
            "identities": sorted(
                (
                    {"kind": k.kind.value, "value": k.value, "customer_id": p.customer_id}
                    for p in profiles
                    for k in identities_of(p)
                ),
                key=lambda i: (i["kind"], i["value"]),
            ),
            "consent": {
                p.customer_id: {c.value: s.model_dump(mode="json") for c, s in p.channels.items()}
                for p in profiles
            },
            "events": [_event(e) for e in events[-self.max_export_events :]],
            "events_complete": complete,
            "journeys": {i: self.records.journey_records(i) for i in ids},
            # On-site messages waiting in (or dismissed from) the person's inboxes, as rendered.
            "web_messages": {i: self.records.web_messages(i) for i in ids},
            "suppression": suppression,
            "not_included": NOT_INCLUDED,
        }


def _ids_of(asked: str, profiles: list[Profile]) -> list[str]:
    """Every customer id of the person: each profile's own and those merged into it, and the one asked."""
    return sorted({asked} | {i for p in profiles for i in p.all_customer_ids()})


def _event(event: StoredEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _event_summary(event: StoredEvent) -> dict[str, Any]:
    """What a masked timeline shows of an event: what happened, when and where; its traits masked as
    a profile's are, and nothing of its properties or context (an IP address, a page's URL)."""
    summary: dict[str, Any] = {
        "at": clock.iso(event.timestamp),
        "type": event.type.value,
        "event": event.event,
        "name": event.name,
        "site_id": event.site_id,
        "message_id": event.message_id,
        "customer_id": event.customer_id,
    }
    if event.traits:
        summary["traits"] = {name: mask_trait(name, value) for name, value in event.traits.items()}
    if event.line_user_id:
        summary["line_user_id"] = mask_identifier(event.line_user_id)
    return {k: v for k, v in summary.items() if v is not None}
