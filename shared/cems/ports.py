"""The ports: what the rules need from storage, queues, SES and the LINE API, as Protocols.

Rule modules depend on these interfaces only; `cems.adapters` implements them on AWS and LINE, and
tests may implement them in memory. An adapter translates its service's errors into the results and
exceptions named here, so no rule catches botocore's errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

if TYPE_CHECKING:
    from cems.email.dispatch import EmailDispatch
    from cems.email.sender import SesResult, Status
    from cems.identity import IdentityKey
    from cems.line.deliveries import (
        Claim,
        DispatchPlan,
        DispatchState,
        PlanUnit,
        RecipientRecord,
        Skip,
        UnitKind,
        UnitStatus,
    )
    from cems.line.dispatch import LineMessage
    from cems.line.linking import LinkNonce
    from cems.line.sender import CallResult
    from cems.lookups import ContactKind
    from cems.models import Channel, Profile, Site, StoredEvent
    from cems.reports.counters import Metric, ReportCell
    from cems.scenario.broadcast import RunKind, SegmentProgress
    from cems.scenario.caps import CapCounter, CapScope
    from cems.scenario.engine import Dispatch, Enrolment
    from cems.scenario.loader import ObjectEvent
    from cems.scenario.model import ChannelCap, Scenario
    from cems.scenario.records import (
        ActiveState,
        CapCounts,
        CapOutcome,
        DateSchedule,
        DueKey,
        PublishOutcome,
        ScenarioSource,
        ScenarioSummary,
        ScenarioVersion,
    )
    from cems.scenario.timers import Timer
    from cems.web.inbox import InboxItem, InboxOwner
    from cems.writes import CommitOutcome, WriteBatch


class ServiceUnavailable(RuntimeError):
    """An AWS service refused a request or could not be reached (throttled, down, misconfigured).
    Raised by adapters where a rule goes on without the call (a report counter, a queue)."""


SuppressionReason = Literal["bounce", "complaint"]


class MessageTag(TypedDict):
    """One SES message tag (configuration-set events carry them back)."""

    Name: str
    Value: str


# -------------------------------------------------------------------------------------- customers


class CustomerReader(Protocol):
    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None: ...


class CustomerProfiles(CustomerReader, Protocol):
    def profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]: ...


class CustomerDirectory(CustomerReader, Protocol):
    """Profiles, and which customer an identity belongs to (following merges)."""

    def customer_for(self, key: IdentityKey) -> str | None: ...


class ProfileWriter(CustomerReader, Protocol):
    def set_traits(self, customer_id: str, traits: Mapping[str, Any], at: datetime | None = None) -> bool: ...


class JourneyCustomers(ProfileWriter, CustomerProfiles, Protocol):
    """What the scenario runner reads and writes of customers: profiles one by one (merges followed)
    and in batches (a tick's or a broadcast page's decisions), and traits."""


class CustomerRecords(Protocol):
    """What the operator console reads of a person (cems.console.customers): each read a GetItem or a
    Query of one partition (a lookup, one customer's events or journeys), never a Scan."""

    def customers_with_contact(self, kind: ContactKind, hashed_value: str) -> list[str]:
        """The customer ids whose contact lookup (cems.lookups) is this hashed email or phone."""
        ...

    def identity_owner(self, key: IdentityKey) -> str | None:
        """The customer id an identity item names, as written (a merge since is not followed)."""
        ...

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None: ...
    def person(self, customer_id: str) -> list[Profile]:
        """The person's profiles: the one `customer_id` was merged into (or its own) first, then each
        profile merged into that one. Empty: no such customer."""
        ...

    def events_of(self, customer_id: str, limit: int | None = None) -> list[StoredEvent]:
        """A customer id's events, oldest first; with `limit`, only the latest `limit` of them."""
        ...

    def enrolments(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer id's enrolments (one per scenario) as stored, as plain JSON values."""
        ...

    def journey_records(self, customer_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every item the customer id has in the Journeys table, by what it holds (enrolments, date
        schedules, frequency-cap counters), as plain JSON values."""
        ...

    def web_messages(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's on-site inbox (cems.web.inbox) as plain JSON records: one Query."""
        ...

    def suppression_entry(self, hashed_address: str) -> dict[str, Any] | None:
        """The suppression list's entry of an address (its hash): reason and time; None: none."""
        ...


class IngestStorePort(Protocol):
    """Identities, profiles and the atomic write of one planned batch (cems.ingest)."""

    def resolve_identities(self, keys: list[IdentityKey]) -> dict[IdentityKey, str]: ...
    def profiles(self, customer_ids: list[str]) -> dict[str, Profile]: ...
    def commit(self, batch: WriteBatch, at: datetime) -> CommitOutcome: ...
    def merge(self, merged: Profile, source: Profile, at: datetime) -> bool: ...
    def move_identity(self, key: IdentityKey, source_id: str, target_id: str, at: datetime) -> bool: ...


class EventHistory(Protocol):
    def history(self, profile: Profile) -> list[StoredEvent]: ...


class ProfileScanner(Protocol):
    """Every live profile, in parallel segments and pages (broadcasts and backfills)."""

    def scan_profiles(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, limit: int
    ) -> ProfilePage: ...
    def scan_profile_page(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, profiles: int
    ) -> ProfilePage:
        """A page of up to `profiles` live profiles (a broadcast page is sized in recipients)."""
        ...

    def scan_profile_range(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, end: dict[str, Any] | None
    ) -> ProfilePage:
        """Every live profile after `start` through `end` (where a page ended: its `next_start`;
        None: the segment's end), however many: a broadcast page read again as far as it first went.
        `next_start` is `end`."""
        ...


class TableSize(Protocol):
    """How many items a table holds, roughly (DynamoDB updates the figure about every six hours):
    what a broadcast's fan-out is sized by."""

    def approximate_items(self) -> int: ...


class RequestTally(Protocol):
    """How many requests the AWS clients behind some adapters have sent so far (retries included):
    what a piece of work cost, as the difference of two readings."""

    def sent(self) -> int: ...


@dataclass(frozen=True)
class ProfilePage:
    profiles: list[Profile]
    scanned: int  # items read, live profiles or not
    # Where the next page starts (opaque to rules; None: this segment is done).
    next_start: dict[str, Any] | None


# ----------------------------------------------------------------------------------- scenarios


class ScenarioReader(Protocol):
    """Stored scenario versions and which one is active."""

    def active(self, scenario_id: str) -> ActiveState | None: ...
    def active_version(self, scenario_id: str) -> ScenarioVersion | None: ...
    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None: ...
    def active_summaries(self) -> list[ScenarioSummary]: ...
    def scenarios_in_play(self) -> list[tuple[str, int]]:
        """Every scenario that may have journeys (active or stopped), with its (last) active version."""
        ...


class ScenarioUpkeep(Protocol):
    """Housekeeping of the scenario store that tick does once per execution environment."""

    def mark_stopped_before_markers(self, at: datetime | None = None) -> int: ...


class ScenarioPublisher(ScenarioReader, Protocol):
    """Stores uploaded scenarios as new versions (scenario_loader)."""

    def put_version(
        self,
        scenario: Scenario,
        document: Mapping[str, Any],
        source: ScenarioSource,
        at: datetime | None = None,
    ) -> PublishOutcome: ...
    def stop(self, scenario_id: str, sequencer: str | None = None, at: datetime | None = None) -> bool: ...


class EnrolmentReads(Protocol):
    """What deciding who enters reads of enrolments (cems.scenario.entrance): a broadcast page's and
    an audience count's, by (customer, scenario) in batches, and one customer's for priority."""

    def of_customer(self, customer_id: str) -> list[Enrolment]: ...
    def get_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Enrolment]:
        """The enrolments of these (customer, scenario) pairs that exist, read consistently in batches."""
        ...


class EnrolmentStorePort(EnrolmentReads, Protocol):
    """Enrolments (every write conditional on the revision read), the due index, date schedules."""

    def get(self, customer_id: str, scenario_id: str) -> Enrolment | None: ...

    def write_many(
        self, writes: Sequence[tuple[Enrolment, int | None]], at: datetime | None = None
    ) -> list[Enrolment | None]:
        """Each enrolment written as `create` (revision read None) or `save` (on the revision read)
        would, in transactions: the stored one each, or None where its condition failed."""
        ...

    def create(self, enrolment: Enrolment, at: datetime | None = None) -> Enrolment | None: ...
    def save(self, enrolment: Enrolment, at: datetime | None = None) -> Enrolment | None: ...
    def iter_due(
        self, now: datetime, page_size: int = 100, after: datetime | None = None
    ) -> Iterator[DueKey]:
        """The due index's items due at or before `now`; with `after`, only those due later than it."""
        ...

    def schedule(self, customer_id: str, scenario_id: str) -> DateSchedule | None: ...
    def schedules_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DateSchedule]:
        """The pending date entries of these (customer, scenario) pairs that exist, read in batches."""
        ...

    def put_schedule(
        self, customer_id: str, scenario_id: str, due_at: datetime, read: DateSchedule | None
    ) -> bool: ...
    def delete_schedule(self, read: DateSchedule) -> bool: ...


class CapStorePort(Protocol):
    """Frequency-cap counters per customer: the channel's day and week counters of the moment given
    (`cems.scenario.caps.counters_of`), taken both or neither, never past a limit. A take given a
    `total` (the limits across channels) counts in the total's counters (`counters_of(TOTAL, at)`)
    too, all four or none; reads name TOTAL among the channels to read them.

    A take may name the send it is for (`key`: its dispatch key, the same when the send is decided
    again): the counters keep the keys that took them, and a take whose key one of them holds
    already answers allowed (`CapOutcome.already`) without counting again. A worker that took the
    caps and enqueued the send, then died before writing the journey, is redone without finding
    its own take in the way (docs/scenario-engine.md, "Frequency caps")."""

    def try_consume(
        self,
        customer_id: str,
        channel: Channel,
        cap: ChannelCap,
        at: datetime | None = None,
        key: str | None = None,
        total: ChannelCap | None = None,
    ) -> CapOutcome: ...
    def release(
        self, customer_id: str, channel: Channel, at: datetime, key: str | None = None, total: bool = False
    ) -> None:
        """Takes back one counted send; with `key`, only from the counters that key took (and the
        key with it); `total`: from the total's counters too."""
        ...

    def counts(self, customer_id: str, channel: CapScope, at: datetime | None = None) -> tuple[int, int]: ...
    def counts_of(
        self, customer_id: str, channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[CapCounter, int]: ...
    def counts_of_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, dict[CapCounter, int]]:
        """`counts_of` of many customers, read consistently in batches."""
        ...

    def read_caps_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, CapCounts]:
        """`counts_of_many` with the keys that took each counter, in the same reads."""
        ...

    def try_consume_many(
        self,
        takes: Sequence[tuple[str, Channel, ChannelCap]],
        at: datetime | None = None,
        send_keys: Sequence[str | None] | None = None,
        totals: Sequence[ChannelCap | None] | None = None,
    ) -> list[CapOutcome]:
        """`try_consume` of many (customer, channel) takes, one each, in transactions: one outcome
        per take, in order; a refused take counted nothing. `send_keys`: each take's send key (as
        `try_consume`'s), `totals` each take's `total`, in the same order. One customer's takes on
        two channels share the total's counters: they are never in one transaction."""
        ...


class BroadcastStorePort(Protocol):
    """Broadcast and backfill runs: started once, then each segment's progress."""

    def start_run(
        self,
        scenario_id: str,
        run: str,
        version: int,
        segments: int,
        now: datetime,
        kind: RunKind = "broadcast",
    ) -> bool: ...
    def claim_stalled(self, scenario_id: str, run: str, now: datetime) -> dict[str, Any] | None: ...
    def mark_enqueued(self, scenario_id: str, run: str) -> None: ...
    def progress(self, scenario_id: str, run: str, segment: int) -> SegmentProgress | None: ...
    def save_progress(self, progress: SegmentProgress, read_pages: int | None) -> bool: ...
    def open_page(self, progress: SegmentProgress, read_pages: int | None) -> bool:
        """Records `progress` (a page opened: its range) if the stored progress still has `read_pages`
        pages (None: there is none) and no page open; False otherwise."""
        ...


# ------------------------------------------------------------------------------ reports, email


@dataclass(frozen=True)
class CountDelta:
    """`n` more of `metric` in `cell` (and `revenue` more, when given): one line of an aggregated add."""

    cell: ReportCell
    metric: Metric
    n: int = 1
    revenue: Decimal | None = None


class CounterPort(Protocol):
    """Report counters; `once` counts a fact once however often it is reported. Raises
    ServiceUnavailable when the counter could not be written."""

    def add(
        self, cell: ReportCell, metric: Metric, *, once: str | None = None, revenue: Decimal | None = None
    ) -> bool: ...

    def add_many(self, deltas: Sequence[CountDelta], *, once: str) -> bool:
        """Every delta (summed per cell and metric) under the one marker `once`: all of them counted,
        or (the marker was there: counted before) none, answering False. For a page of a broadcast
        or a LINE dispatch unit: one write per cell instead of one per recipient."""
        ...


class ReportReader(Protocol):
    def cells(self, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]: ...
    def scenario_ids(self) -> list[str]: ...


class SuppressionPort(Protocol):
    def reason(self, address: str) -> str | None: ...
    def suppress(self, address: str, reason: SuppressionReason, at: datetime | None = None) -> bool: ...


class ConfirmationMarkerPort(Protocol):
    """The last double opt-in confirmation mail per address (hashed)."""

    def take(self, hashed_address: str, event_id: str, at: datetime, interval: Any) -> bool: ...


# ------------------------------------------------------------------------------------- deliveries


@dataclass(frozen=True)
class ClaimAnswer:
    """A claim taken (`token`, and the claim as written in `item`), or refused (no token; `item` is
    what stands in the way, None when nothing was read)."""

    token: str | None
    item: dict[str, Any] | None


class DeliveryClaims(Protocol):
    """The one delivery-claim store of every channel's sender, keyed by channel, dispatch and unit
    (a LINE call, a mail): a claim is taken with a conditional write before the provider is called
    and finished after it, so a redelivered dispatch never sends twice."""

    def claim(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        status: str,
        *,
        fields: Mapping[str, Any],
        lease: timedelta | None = None,
        retake: Iterable[str] = (),
        retake_expired_lease_of: str | None = None,
    ) -> ClaimAnswer:
        """Write `status` and `fields` (None values left out) with a new claim token, unless the
        unit has a claim already whose status is not in `retake` (nor `retake_expired_lease_of`
        with its lease run out)."""
        ...

    def finish(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        token: str,
        status: str,
        fields: Mapping[str, Any],
        *,
        release: bool = False,
        only_from: str | None = None,
    ) -> bool:
        """Record the outcome of a claim still held by `token` (and in status `only_from`, if
        given): `fields` set, None ones removed, the lease ended; `release` gives the claim up.
        False when the claim is not that any more."""
        ...

    def read(self, channel: Channel, idempotency_key: str, unit: str) -> dict[str, Any] | None: ...


class EmailDeliveryRecords(Protocol):
    """The claim and outcome of one email dispatch, so a mail is sent at most once."""

    def get(self, idempotency_key: str) -> dict[str, Any] | None: ...
    def claim(
        self, dispatch: EmailDispatch, status: Status, reason: str | None = None
    ) -> tuple[str | None, dict[str, Any] | None]: ...
    def finish(
        self,
        idempotency_key: str,
        token: str,
        status: Status,
        *,
        message_id: str | None = None,
        error_code: str | None = None,
        reason: str | None = None,
    ) -> bool: ...
    def abandon(self, idempotency_key: str, token: str) -> bool: ...


class MailGateway(Protocol):
    """Sends one composed MIME message (SES); never raises for the service's answers."""

    def send(
        self,
        from_address: str,
        to_address: str,
        raw: bytes,
        configuration_set: str | None,
        tags: Sequence[MessageTag],
    ) -> SesResult: ...


# ----------------------------------------------------------------------------------------- LINE


class LineDeliveryClaims(Protocol):
    """A LINE dispatch's frozen plan, a claim per LINE call, an outcome per recipient."""

    def state(self, idempotency_key: str) -> DispatchState: ...
    def create_plan(self, plan: DispatchPlan) -> bool: ...
    def extend_plan(self, plan: DispatchPlan) -> bool:
        """Store `plan`, the stored plan with one extension more (its units appended, the
        extension's skipped recipients), only if the stored plan has exactly one extension fewer;
        False when it has not (another attempt extended it first: read it again). Nothing else of
        the stored plan changes."""
        ...

    def claim(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        lease: timedelta,
        skipped: Mapping[str, Skip] | None = None,
    ) -> Claim:
        """Take the unit (see DeliveryClaims). `skipped`, when given, is stored as the unit's
        audience (UnitState.skipped, read back with the claim); a claim without it keeps the one
        stored (the sender's retry of a call that may have gone through)."""
        ...

    def finish(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        token: str,
        status: UnitStatus,
        *,
        reason: str | None = None,
        http_status: int | None = None,
        line_request_id: str | None = None,
    ) -> bool: ...
    def record(
        self, idempotency_key: str, records: Iterable[RecipientRecord], metadata: Mapping[str, Any]
    ) -> None: ...


class ShortLinkWriter(Protocol):
    """Short links of LINE texts (cems.line.links): code -> the signed click token, until its expiry."""

    def put(self, code: str, token: str, expires_at: int) -> bool:
        """Store the link unless its code is stored already (True when written now; False: it was,
        by an earlier attempt of the same dispatch, which is the same link). ServiceUnavailable when
        it could not be written: the message must not go out with a link that finds nothing."""
        ...


class ShortLinkReader(Protocol):
    def token(self, code: str) -> str | None:
        """The signed click token stored under `code`, or None (never stored, or deleted by its TTL).
        ServiceUnavailable when the store could not be read."""
        ...


class LineGateway(Protocol):
    """One push or multicast through the LINE Messaging API, classified; never raises for LINE's answers."""

    def send(
        self, kind: UnitKind, to: Sequence[str], messages: list[LineMessage], key: str, quiet: bool
    ) -> CallResult: ...


# ------------------------------------------------------------------------ sites, LINE linking


class SiteLookup(Protocol):
    def get(self, key: str) -> Site | None:
        """The site a presented key names, with `trust` saying which kind of key it is."""
        ...


class NoncePort(Protocol):
    """Account-link nonces: issued bound to a proven customer, consumed once."""

    def issue(self, anonymous_id: str, site_id: str, user_id: str) -> str: ...
    def consume(self, nonce: str, webhook_event_id: str) -> LinkNonce | None: ...


# ------------------------------------------------------------------------- on-site messages


class WebInbox(Protocol):
    """Visitors' on-site inboxes (cems.web.inbox): one item per owner and dispatch, until it expires."""

    def put(self, item: InboxItem) -> bool:
        """Write the item unless the owner has one for its dispatch already (False: it was there,
        left as it is, so a redelivered dispatch never brings back a dismissed message)."""
        ...

    def items(self, owner: InboxOwner, limit: int) -> list[InboxItem]:
        """Up to `limit` of the owner's items, expired ones included (TTL deletes late)."""
        ...

    def mark(
        self, owner: InboxOwner, dispatch_key: str, field: Literal["shown_at", "dismissed_at"], at: datetime
    ) -> bool:
        """Set `field` to `at` on an existing item where it is not set yet; False when there is no
        such item or it was set before (the first impression or dismissal wins)."""
        ...


class BrowserOwners(Protocol):
    """Whose inbox a browser reads (cems.web.fetch): its anonymous id's owner, nothing else."""

    def owner_of_browser(self, anonymous_id: str) -> str | None:
        """The customer the anonymous id's identity item names (one GetItem; merges re-point it),
        or None for a browser never seen."""
        ...


# ------------------------------------------------------------------------- scenario I/O


SinkResult = Literal["enqueued", "unsupported"]


class DispatchSink(Protocol):
    def send(self, dispatch: Dispatch) -> SinkResult: ...

    def send_batch(self, dispatches: Sequence[Dispatch], batch: str) -> list[SinkResult]:
        """The dispatches of one batch of decisions (a broadcast page), one result each, in order.
        Those on one channel whose rendered content is identical for every recipient (nothing
        personal, no per-customer tracked link) share one queued dispatch of up to 500 recipients
        under a key made from `batch` and the content, which the caller must give again unchanged
        when it redoes the same batch; the rest are queued one each, as `send` does."""
        ...


class RichMenuLinker(Protocol):
    def link(self, line_user_id: str, rich_menu_id: str | None) -> str | None:
        """None when linked (unlinked for None); else a short reason, never containing the user id."""
        ...


class ScenarioFilesPort(Protocol):
    """The scenario bucket: uploaded files as of their S3 event, and the reports written back."""

    def read(self, event: ObjectEvent, max_bytes: int) -> bytes | None: ...
    def write_report(self, bucket: str, name: str, report: dict[str, Any], text: str) -> str: ...


class LineReplies(Protocol):
    """What the LINE webhook asks of the Messaging API: a link token, a reply to an event. Either
    raises when LINE refuses or cannot be reached (the webhook records it and goes on)."""

    def issue_link_token(self, line_user_id: str) -> str: ...
    def reply(self, reply_token: str, messages: list[Any]) -> None: ...


# ------------------------------------------------------------------------------------- queues


class MessageQueue(Protocol):
    """A queue a rule puts messages on (SQS). Raises ServiceUnavailable when any was not taken."""

    def send(self, bodies: Sequence[str]) -> None: ...


class TimerQueue(Protocol):
    """Where timers wait until their items' due time (SQS, a delay per message: cems.scenario.timers).
    Raises ServiceUnavailable when any was not taken (the tick still finds its item when due)."""

    def start(self, timers: Sequence[Timer]) -> None: ...


class SqsSender(Protocol):
    """The one SQS call the consent confirmations and dispatch sink make (an SQS client has it)."""

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> Any: ...
