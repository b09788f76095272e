"""What a click, an open, an unsubscribe or an SES event does: events, report counters, suppression.

Every action starts from a signed token (cems.engagement.tokens) or an SES event carrying CEMS's
mail tags (cems.engagement.ses_events), so it knows the dispatch, the customer and the report cell.
It then:

- stores an event through cems.ingest under the site id `engage` (EngagementEvent names), on the
  customer found through one of the profile's identities, so the Events stream carries it to the
  scenario engine like any other event (goals, exits, branches). Message ids are deterministic where
  the action must count once (`open:`, `click:`, `unsub:`, `ses:`), so a repeat stores nothing;
- counts opens and clicks once per dispatch and SES deliveries once per dispatch (ReportCounters,
  `once=`), when the dispatch belongs to a scenario;
- suppresses hard-bounced and complaining addresses (SuppressionStore).

Test tokens and test mails (`test`) answer like real ones and change nothing (a bad address is still
suppressed: the address is bad whoever mailed it). A customer that no longer exists (erased) gets
nothing stored, nothing counted.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cems import clock
from cems.engagement import ENGAGE_SOURCE_ID, EngagementEvent
from cems.engagement.ses_events import DispatchTags, SesEvent
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken
from cems.ingest import Ingestor
from cems.models import Channel, MessageType, Profile, SegmentMessage, Site, Trust, address_hash
from cems.ports import CounterPort, CustomerReader, ShortLinkReader, SuppressionPort
from cems.reports.counters import Metric, ReportCell
from cems.topics import Topic, left_topic

# The "site" engagement events are stored under (no write key: engage proves itself by the token's
# signature, or by being subscribed to the configuration set's SNS topic).
ENGAGE_SOURCE = Site(
    write_key="",
    site_id=ENGAGE_SOURCE_ID,
    name="Engagement",
    origins=[],
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    # Its messages come from tokens CEMS signed, or from SES through the subscribed topic.
    trust=Trust.SERVER,
)
MAX_MESSAGE_ID = 100  # cems.config.MAX_MESSAGE_ID_LENGTH
LIBRARY = {"name": "cems-engage"}


def message_id(prefix: str, *parts: str) -> str:
    """`<prefix>:<parts joined by |>`, or its SHA-256 when longer than a messageId may be."""
    text = "|".join(parts)
    if len(prefix) + 1 + len(text) <= MAX_MESSAGE_ID:
        return f"{prefix}:{text}"
    return f"{prefix}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def visitor_network(address: Any) -> str | None:
    """A shared link's clicker as far as the rules can tell: the IPv4 address, or the IPv6 /64 (one
    host changes its privacy addresses within its /64 at will, so the whole address would count it
    again and again). None for anything that is not an IP address."""
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        return None
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def identity_of(profile: Profile) -> dict[str, str]:
    """The message fields that resolve to `profile`: its user id, else an anonymous id, else its LINE
    id (ingest looks customers up by identity; merged profiles' identities point at the survivor)."""
    if profile.user_id:
        return {"userId": profile.user_id}
    if profile.anonymous_ids:
        return {"anonymousId": min(profile.anonymous_ids)}
    if profile.line_user_id:
        return {"lineUserId": profile.line_user_id}
    return {}


def report_cell(
    scenario_id: str | None, version: int | None, step_id: str | None, variant: str | None, channel: Channel
) -> ReportCell | None:
    if scenario_id is None or version is None:
        return None  # not a scenario's dispatch (nothing to report on)
    return ReportCell(
        scenario_id=scenario_id, version=version, step_id=step_id, variant=variant, channel=channel.value
    )


class ConfirmResult(StrEnum):
    CONFIRMED = "confirmed"  # consent given now, for the address the mail went to
    ALREADY = "already"  # consent for that address was held already
    EXPIRED = "expired"  # the link is older than a week: ask again
    ADDRESS_CHANGED = "address_changed"  # the customer's address is no longer the one confirmed
    UNKNOWN = "unknown"  # no such customer (erased): nothing stored


class UnsubscribeResult(StrEnum):
    UNSUBSCRIBED = "unsubscribed"  # consent withdrawn now
    ALREADY = "already"  # consent was withdrawn before (a replay, or another mail's link)
    TEST = "test"  # a test mail's link: nothing changed
    UNKNOWN = "unknown"  # no such customer (erased): nothing stored


class TopicResult(StrEnum):
    """What a choice on the preference page did."""

    LEFT = "left"  # the topic is left now
    JOINED = "joined"  # the topic is joined again now
    ALREADY = "already"  # it already was as chosen: nothing changed
    TEST = "test"  # a test mail's link: nothing changed
    UNKNOWN = "unknown"  # no such customer (erased): nothing stored
    UNKNOWN_TOPIC = "unknown_topic"  # not one of the deployment's topics: nothing stored


@dataclass(frozen=True)
class Preferences:
    """What the preference page (GET /u/) shows."""

    token: TrackingToken
    # The mail's own topic (its scenario's), when it has one the deployment still lists.
    topic: Topic | None
    # Every topic of the deployment and whether the customer gets it (False: left).
    topics: tuple[tuple[Topic, bool], ...]
    email_stopped: bool  # "everything" was chosen (email consent withdrawn)
    test: bool = False
    refused: UnsubscribeResult | None = None  # UNKNOWN: nothing to show but that

    def left(self, topic: str) -> bool:
        return any(t.id == topic and not subscribed for t, subscribed in self.topics)


@dataclass(frozen=True)
class Recorded:
    """What one tracked action did, for logs and metrics (no ids, addresses or tokens)."""

    stored: bool = False  # a new event was stored
    counted: bool = False  # a report counter moved
    test: bool = False
    known: bool = True  # the customer exists


@dataclass
class SesOutcome:
    """What one SES event did, for logs and metrics (no addresses)."""

    event_type: str
    suppressed: int = 0
    stored: bool = False
    counted: bool = False
    tagged: bool = True  # the mail carried CEMS's tags
    test: bool = False
    bounce_type: str | None = None


class Engagement:
    def __init__(
        self,
        signer: TokenSigner,
        ingestor: Ingestor,
        customers: CustomerReader,
        counters: CounterPort,
        suppressions: SuppressionPort,
        short_links: ShortLinkReader | None = None,
        topics: Sequence[Topic] = (),
    ) -> None:
        self.short_links = short_links
        # The deployment's topics (cems.topics): the only ones the preference page shows or records.
        self.topics = tuple(topics)
        self.signer = signer
        self.ingestor = ingestor
        self.customers = customers
        self.counters = counters
        self.suppressions = suppressions

    # --- tokens -------------------------------------------------------------------------------------

    def click(self, value: str, visitor: str | None = None) -> tuple[TrackingToken, Recorded]:
        """The verified click token (its url is where to send the visitor) and what was recorded.
        Raises InvalidToken; the visitor goes on to the destination even if the customer is gone.
        `visitor` (the handler's mark of who asks: `visitor_network` of its address) tells the
        clicks of a shared link apart; it is hashed into a once-marker, never stored or logged."""
        token = self.signer.verify(value, TokenKind.CLICK)
        assert token.url is not None  # a click token always has one (TrackingToken validates)
        if token.expired(clock.now()):
            return token, Recorded()  # an old mail's link still leads on, but is no longer a fact
        # One event per link and dispatch: clicking again (or a scanner and then the customer) is
        # the same fact for goals and branches.
        link = hashlib.sha256(token.url.encode("utf-8")).hexdigest()[:16]
        if token.shared:
            return token, self._shared_click(token, visitor)
        recorded = self._record(
            token, EngagementEvent.CLICKED, message_id("click", token.dispatch_key, link), {"url": token.url}
        )
        if recorded.known and not token.test:
            recorded = self._count(recorded, token, Metric.CLICKED, f"clicked#{token.dispatch_key}")
        return token, recorded

    def short_click(self, code: str, visitor: str | None = None) -> tuple[TrackingToken, Recorded] | None:
        """A tap on a short link (`/r/<code>`, LINE text): the signed token stored under the code,
        then exactly what a tap on the long link does (`click`: verified again, so the store alone
        can redirect nowhere; counted once; past its expiry it leads on and counts nothing). None for
        a code that is not stored (never made, or deleted by its TTL). Raises InvalidToken (a token
        signed under a retired secret) and ServiceUnavailable (the store could not be read)."""
        if self.short_links is None:
            return None
        value = self.short_links.token(code)
        if value is None:
            return None
        return self.click(value, visitor)

    def _shared_click(self, token: TrackingToken, visitor: str | None) -> Recorded:
        """A click on a link of a shared (multicast) LINE dispatch: nobody is named, so no event is
        stored (no goal, wait or branch can use it; the engine keeps the dispatches of scenarios
        that need that per customer). It is counted as CLICKED in the step's report cell once per
        dispatch and visitor, as a customer's own link counts once per dispatch: a reload, a second
        tap or another link of the same message from the same network address counts nothing.
        Without a visitor mark, once per dispatch (a floor)."""
        if token.test:
            return Recorded(test=True)
        cell = report_cell(token.scenario_id, token.version, token.step_id, token.variant, token.channel)
        if cell is None:
            return Recorded()
        # Salted with the dispatch, so a marker says nothing about the same visitor elsewhere.
        salted = f"{token.dispatch_key}\n{visitor}".encode()
        who = hashlib.sha256(salted).hexdigest()[:16] if visitor else "-"
        counted = self.counters.add(cell, Metric.CLICKED, once=f"clicked#{token.dispatch_key}#{who}")
        return Recorded(counted=counted)

    def open(self, value: str) -> Recorded:
        """Record the open a pixel request stands for (once per dispatch). Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.OPEN)
        if token.expired(clock.now()):
            return Recorded()
        recorded = self._record(token, EngagementEvent.OPENED, message_id("open", token.dispatch_key), {})
        if recorded.known and not token.test:
            recorded = self._count(recorded, token, Metric.OPENED, f"opened#{token.dispatch_key}")
        return recorded

    def unsubscribe_state(self, value: str) -> tuple[TrackingToken, UnsubscribeResult | None]:
        """For the confirmation page (GET): the token and, when the form need not be shown, why
        (already unsubscribed, unknown customer). Changes nothing. Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.UNSUBSCRIBE)
        if token.test:
            return token, None
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return token, UnsubscribeResult.UNKNOWN
        if _consent_withdrawn(profile):
            return token, UnsubscribeResult.ALREADY
        return token, None

    def unsubscribe(self, value: str) -> tuple[TrackingToken, UnsubscribeResult]:
        """Withdraw the customer's email consent (one-click, RFC 8058). Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.UNSUBSCRIBE)
        if token.test:
            return token, UnsubscribeResult.TEST
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return token, UnsubscribeResult.UNKNOWN
        if _consent_withdrawn(profile):
            return token, UnsubscribeResult.ALREADY
        # The id names the consent being withdrawn as well as the dispatch: a replay (or the mail
        # client's one-click POST racing the customer's own) stores nothing, while a consent given
        # again later can be withdrawn again through the same old mail.
        state = profile.channels.get(Channel.EMAIL)
        parts = [token.dispatch_key] + ([str(int(state.updated_at.timestamp()))] if state else [])
        stored = self._store(profile, token, EngagementEvent.UNSUBSCRIBED, message_id("unsub", *parts), {})
        return token, UnsubscribeResult.UNSUBSCRIBED if stored else UnsubscribeResult.ALREADY

    def preferences(self, value: str) -> Preferences:
        """For the preference page (GET): the mail's topic, each topic's state and whether email is
        stopped. Changes nothing (mail scanners open every link). Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.UNSUBSCRIBE)
        listed = {t.id: t for t in self.topics}
        # A topic the deployment no longer lists is not offered: "everything" still is.
        mail_topic = listed.get(token.topic) if token.topic else None
        if token.test:
            return Preferences(token, mail_topic, tuple((t, True) for t in self.topics), False, True)
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return Preferences(token, mail_topic, (), False, False, UnsubscribeResult.UNKNOWN)
        states = tuple((t, not left_topic(profile.topics, t.id)) for t in self.topics)
        return Preferences(token, mail_topic, states, _consent_withdrawn(profile), False)

    def choose_topic(self, value: str, topic: str, subscribed: bool) -> tuple[TrackingToken, TopicResult]:
        """The preference page's choice: leave `topic` (or join it again), on every channel. Only a
        topic the deployment lists; the signed token is the proof, as for unsubscribing. Raises
        InvalidToken."""
        token = self.signer.verify(value, TokenKind.UNSUBSCRIBE)
        if topic not in {t.id for t in self.topics}:
            return token, TopicResult.UNKNOWN_TOPIC
        if token.test:
            return token, TopicResult.TEST
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return token, TopicResult.UNKNOWN
        if left_topic(profile.topics, topic) != subscribed:
            return token, TopicResult.ALREADY  # nothing to change: a replay, or a second tab
        # Named by the choice it replaces, as for unsubscribing: a replay stores nothing, while leaving
        # again after joining again (through the same old mail) does.
        before = profile.topics.get(topic)
        since = str(int(before.updated_at.timestamp())) if before else "-"
        name = EngagementEvent.TOPIC_JOINED if subscribed else EngagementEvent.TOPIC_LEFT
        action = "join" if subscribed else "leave"
        mid = message_id("topic", token.dispatch_key, topic, action, since)
        stored = self._store(profile, token, name, mid, {"topic": topic})
        if not stored:
            return token, TopicResult.ALREADY
        return token, TopicResult.JOINED if subscribed else TopicResult.LEFT

    def confirm_state(self, value: str) -> tuple[TrackingToken, ConfirmResult | None]:
        """For the confirmation page (GET): why the button need not be shown, or None. Changes
        nothing (mail scanners open links). Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.CONFIRM)
        return token, self._confirm_check(token)[0]

    def confirm(self, value: str) -> tuple[TrackingToken, ConfirmResult]:
        """Double opt-in: record the customer's email consent for the address the mail was sent to.
        Raises InvalidToken."""
        token = self.signer.verify(value, TokenKind.CONFIRM)
        refused, profile = self._confirm_check(token)
        if refused is not None or profile is None:
            return token, refused or ConfirmResult.UNKNOWN
        state = profile.channels.get(Channel.EMAIL)
        # Named by the consent state it replaces, as for unsubscribing: a replay stores nothing,
        # while consent withdrawn later can be given again through the same (unexpired) link.
        parts = [token.dispatch_key] + ([str(int(state.updated_at.timestamp()))] if state else [])
        stored = self._store(
            profile,
            token,
            EngagementEvent.CONSENT_CONFIRMED,
            message_id("optin", *parts),
            {"address_hash": token.address_hash},
        )
        return token, ConfirmResult.CONFIRMED if stored else ConfirmResult.ALREADY

    def _confirm_check(self, token: TrackingToken) -> tuple[ConfirmResult | None, Profile | None]:
        if token.expired(clock.now()):
            return ConfirmResult.EXPIRED, None
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return ConfirmResult.UNKNOWN, None
        address = profile.traits.get("email")
        if not isinstance(address, str) or address_hash(address) != token.address_hash:
            return ConfirmResult.ADDRESS_CHANGED, None
        state = profile.channels.get(Channel.EMAIL)
        if state is not None and state.address_hash == token.address_hash and state.consents_for(address):
            return ConfirmResult.ALREADY, profile
        return None, profile

    # --- SES ----------------------------------------------------------------------------------------

    def ses_event(self, event: SesEvent) -> SesOutcome:
        """Apply one SES event: suppress bad addresses, store the event, count deliveries. Safe to
        repeat (SNS delivers at least once): suppression, the stored event and the counter are each
        written once."""
        now = clock.now()
        outcome = SesOutcome(event_type=event.event_type)
        tags = event.dispatch()
        outcome.tagged = tags is not None
        outcome.test = bool(tags and tags.test)
        name: EngagementEvent | None = None
        properties: dict[str, Any] = {}
        if event.event_type == "Bounce" and event.bounce is not None:
            outcome.bounce_type = event.bounce.bounce_type
            if event.is_permanent_bounce:
                for address in event.bounced_addresses():
                    outcome.suppressed += self.suppressions.suppress(address, "bounce", now)
                name = EngagementEvent.BOUNCED
                properties = {
                    "bounce_type": event.bounce.bounce_type,
                    "bounce_sub_type": event.bounce.bounce_sub_type,
                }
        elif event.event_type == "Complaint" and event.complaint is not None:
            for address in event.complained_addresses():
                outcome.suppressed += self.suppressions.suppress(address, "complaint", now)
            name = EngagementEvent.COMPLAINED
            properties = {"feedback_type": event.complaint.complaint_feedback_type}
        elif event.event_type == "Delivery" and tags is not None and not tags.test:
            # SES reports deliveries of mail only: the channel is email whatever the tags say.
            cell = report_cell(tags.scenario_id, tags.version, tags.step_id, tags.variant, Channel.EMAIL)
            if cell is not None:
                outcome.counted = self.counters.add(cell, Metric.DELIVERED, once=f"delivered#{tags.dispatch}")
        if name is not None and tags is not None and not tags.test and tags.customer_id:
            profile = self.customers.profile(tags.customer_id)
            if profile is not None and identity_of(profile):
                properties = {**_tag_properties(tags), **properties}
                message = _message(
                    profile,
                    name,
                    message_id("ses", name.value.split()[-1].lower(), event.mail.message_id),
                    properties,
                    {"ses": {"message_id": event.mail.message_id}},
                )
                outcome.stored = self._ingest(message)
        return outcome

    # --- helpers ------------------------------------------------------------------------------------

    def _record(
        self, token: TrackingToken, name: EngagementEvent, mid: str, extra: dict[str, Any]
    ) -> Recorded:
        if token.test:
            return Recorded(test=True)
        profile = self.customers.profile(token.customer_id)
        if profile is None or not identity_of(profile):
            return Recorded(known=False)
        return Recorded(stored=self._store(profile, token, name, mid, extra))

    def _store(
        self, profile: Profile, token: TrackingToken, name: EngagementEvent, mid: str, extra: dict[str, Any]
    ) -> bool:
        properties = {
            "channel": token.channel,
            "dispatch_key": token.dispatch_key,
            "scenario_id": token.scenario_id,
            "version": token.version,
            "step_id": token.step_id,
            "variant": token.variant,
            **extra,
        }
        return self._ingest(_message(profile, name, mid, properties, {}))

    def _ingest(self, message: SegmentMessage) -> bool:
        result = self.ingestor.ingest(ENGAGE_SOURCE, [message], clock.now())
        return result.stored > 0

    def _count(self, recorded: Recorded, token: TrackingToken, metric: Metric, once: str) -> Recorded:
        # Counted whether or not the event was new: `once` makes a repeat count nothing, and a
        # first attempt that stored the event but failed before counting is completed by the next.
        cell = report_cell(token.scenario_id, token.version, token.step_id, token.variant, token.channel)
        if cell is None:
            return recorded
        counted = self.counters.add(cell, metric, once=once)
        return Recorded(stored=recorded.stored, counted=counted, test=recorded.test, known=recorded.known)


def _consent_withdrawn(profile: Profile) -> bool:
    state = profile.channels.get(Channel.EMAIL)
    return state is not None and not state.consent


def _tag_properties(tags: DispatchTags) -> dict[str, Any]:
    return {
        "channel": "email",
        "dispatch_key": tags.dispatch_key,
        "scenario_id": tags.scenario_id,
        "version": tags.version,
        "step_id": tags.step_id,
        "variant": tags.variant,
    }


def _message(
    profile: Profile, name: EngagementEvent, mid: str, properties: dict[str, Any], context: dict[str, Any]
) -> SegmentMessage:
    return SegmentMessage.model_validate(
        {
            "type": MessageType.TRACK,
            "messageId": mid,
            "event": name.value,
            **identity_of(profile),
            "timestamp": clock.now(),
            "properties": properties,
            "context": {"library": LIBRARY, **context},
        }
    )
