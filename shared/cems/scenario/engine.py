"""The enrolment state machine: pure decisions about one customer's journey in one scenario.

Nothing here reads the clock, a table or a queue. The caller (`trigger`, `tick`, the simulator)
reads the enrolment, the profile, the events and the cap counters, calls one of:

- `enrol(scenario, version, profile, trigger_event, existing, now, events=, others=)`: may this
  customer enter now? (trigger, audience, blacklist, re-entry rules, priority; holdout assigned);
- `advance(scenario, enrolment, profile, events, now, caps)`: run the steps that are due, until a
  wait or the end;
- `on_event(scenario, enrolment, event, profile, now)`: what one new event of the customer changes
  (goal, the event a step waits for, an opt-out, a response);

and carries out what comes back: dispatches to enqueue, cap counters to take, traits to set, rich
menus to link, then the new enrolment written on condition that `revision` is still the one read.
Decisions depend only on their arguments, so two evaluators of the same revision at the same time
decide the same thing, with the same dispatch keys: whichever write wins, a send is sent once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cems.activity import ChannelChoice, choose
from cems.channels.plugin import SendContext
from cems.channels.registry import option_text, plugin, plugins, route
from cems.engagement import uses_link_clicks
from cems.models import Channel, LineEvent, MessageType, Profile, StoredEvent
from cems.scenario.assignment import in_holdout, pick_variant
from cems.scenario.caps import TOTAL, CapCounter, CapPeriod, CapScope, counters_of
from cems.scenario.condition_models import (
    AllCondition,
    AnyCondition,
    Condition,
    EventCountCondition,
    NotCondition,
)
from cems.scenario.conditions import evaluate, event_matches, event_name
from cems.scenario.model import (
    BranchStep,
    BroadcastTrigger,
    ChannelCap,
    DateTrigger,
    EndStep,
    EventTrigger,
    FrequencyCaps,
    LineFollowTrigger,
    PropertyCondition,
    QuietHours,
    RichMenuStep,
    Scenario,
    SendStep,
    SetTraitStep,
    SplitStep,
    Step,
    SurveyAnswerTrigger,
    WaitForEventStep,
    WaitStep,
)
from cems.scenario.timing import may_send, send_opening, wait_due
from cems.templates import RenderError, render, template_scope
from cems.topics import left_topic

# More steps than any path without a wait can have (loops need a wait): a safety stop, after which
# the enrolment stays active and due now, so the next activation carries on.
MAX_STEPS_PER_ACTIVATION = 100
# A profile trait that, when true, stops every journey and keeps the customer out of new ones.
BLACKLIST_TRAIT = "blacklisted"
MAX_KEY_LENGTH = 256  # the senders' dispatch idempotency_key


class EnrolmentState(StrEnum):
    ACTIVE = "active"  # running steps (due now)
    WAITING = "waiting"  # until due_at: a wait step, a send window or a deferred (capped) send
    WAITING_EVENT = "waiting_event"  # for `awaiting.event` until `awaiting.timeout_at`
    COMPLETED = "completed"  # reached an end
    EXITED = "exited"  # left early: exit_reason says why
    CONVERTED = "converted"  # reached the goal


ENDED = frozenset({EnrolmentState.COMPLETED, EnrolmentState.EXITED, EnrolmentState.CONVERTED})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TriggerRef(_Frozen):
    """The event that started the journey: what templates see as `event` and what `until:
    trigger_event` counts from (kept on the enrolment, so a later step needs no look-up)."""

    message_id: str
    site_id: str
    type: MessageType
    event: str | None = None
    timestamp: datetime
    properties: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, event: StoredEvent) -> TriggerRef:
        return cls(
            message_id=event.message_id,
            site_id=event.site_id,
            type=event.type,
            event=event.event,
            timestamp=event.timestamp,
            properties=event.properties,
        )

    def as_event(self, customer_id: str) -> StoredEvent:
        return StoredEvent(
            customer_id=customer_id,
            site_id=self.site_id,
            type=self.type,
            message_id=self.message_id,
            event=self.event,
            timestamp=self.timestamp,
            received_at=self.timestamp,
            properties=self.properties,
        )


class Awaiting(_Frozen):
    """What a `wait_for_event` step waits for: `event` passing `where`, from `since` to `timeout_at`."""

    event: str
    where: list[PropertyCondition] = Field(default_factory=list)
    since: datetime
    timeout_at: datetime


class SentMessage(_Frozen):
    """A message a journey handed to a sender: its step, the channel it went to first (the sender may
    fall back to the next of the step's channels) and when. What the console's customer timeline
    lists as messages, with nothing of the content (rendered at send time, not kept)."""

    step_id: str
    channel: Channel
    at: datetime


# The messages a journey keeps (`Enrolment.messages`), the latest: a timeline to read, and an item
# that cannot grow without bound through a loop.
MESSAGES_KEPT = 20


class Enrolment(_Frozen):
    """One customer's journey in one scenario (the JourneysTable item `ENR#<customer>` / `<scenario>`)."""

    customer_id: str
    scenario_id: str
    version: int
    step_id: str | None
    state: EnrolmentState
    exit_reason: str | None = None
    variant: str | None = None
    holdout: bool = False
    entry: int = Field(default=1, ge=1)  # 1 for the first journey, 2 for a re-entry, ...
    entered_at: datetime
    due_at: datetime | None = None
    awaiting: Awaiting | None = None
    sends: int = 0
    # Sends since the customer last did anything (for exit.no_response_after_sends).
    unanswered_sends: int = 0
    last_send_at: datetime | None = None
    # The step and channel of the last send (what a conversion is attributed to in the report).
    last_send_step: str | None = None
    last_send_channel: Channel | None = None
    # Sends per send step in this journey: a step sent again (a loop) gets its own dispatch key.
    step_sends: dict[str, int] = Field(default_factory=dict)
    # The latest MESSAGES_KEPT messages sent, oldest first (kept from issue 12 on).
    messages: list[SentMessage] = Field(default_factory=list)
    # When a capped send was first deferred (frequency_cap.give_up_after counts from it).
    deferred_since: datetime | None = None
    ended_at: datetime | None = None
    # Raised by one on every change; the store writes on condition that it is still the one read.
    revision: int = 0
    trigger: TriggerRef | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED


# ---------------------------------------------------------------------------------------- what comes out


class Dispatch(_Frozen):
    """A send the caller enqueues (before writing the enrolment): on `channel`, with `fallbacks`, the
    channels after it in the step's preference that could reach the customer too (rendered as well,
    for a sender that finds `channel` unreachable when it sends). `messages` holds each channel's
    rendered message, as its plugin (cems.channels.registry) made it."""

    key: str
    channel: Channel
    fallbacks: tuple[Channel, ...] = ()
    customer_id: str
    scenario_id: str
    version: int
    step_id: str
    entry: int
    variant: str | None = None
    messages: dict[Channel, Any] = Field(default_factory=dict)
    # The scenario's `tracking` (click tracker for links, open pixel for email).
    track_clicks: bool = True
    track_opens: bool = True
    # The scenario's conditions use link clicks (cems.engagement.uses_link_clicks): its tracked links
    # must name the customer, so its LINE dispatches are never shared by multicast.
    per_customer_clicks: bool = True

    @property
    def route(self) -> str:
        """Where it goes, as the simulator and logs show it: `line`, `line_then_email`, ..."""
        return "_then_".join([self.channel, *self.fallbacks])

    def send_context(self) -> SendContext:
        return SendContext(
            key=self.key,
            customer_id=self.customer_id,
            scenario_id=self.scenario_id,
            version=self.version,
            step_id=self.step_id,
            variant=self.variant,
            track_clicks=self.track_clicks,
            track_opens=self.track_opens,
        )


class CapRequest(_Frozen):
    """Take one send from the customer's cap counters (conditional ADD, `count < limit`). If the
    store refuses (another send took the last one first), re-run `advance` with fresh counts.

    `key`: the send's dispatch key, the same whenever this send is decided again (a redo after a
    crash, the loser of a race). The counters keep the keys that took them, and a take by a key they
    hold is allowed without counting again: one send, counted once (docs/scenario-engine.md).

    Where the deployment caps the total across channels (`total_day_limit`, `total_week_limit`), the
    send counts in the total's counters too, taken in the same transaction as the channel's."""

    channel: Channel
    day: CapCounter
    week: CapCounter
    day_limit: int | None
    week_limit: int | None
    key: str | None = None
    total_day_limit: int | None = None
    total_week_limit: int | None = None

    @property
    def cap(self) -> ChannelCap:
        """The channel's limits, as the cap store takes them."""
        return ChannelCap(per_day=self.day_limit, per_week=self.week_limit)

    @property
    def total(self) -> ChannelCap | None:
        """The limits across channels, None when the send counts in no total counter."""
        if self.total_day_limit is None and self.total_week_limit is None:
            return None
        return ChannelCap(per_day=self.total_day_limit, per_week=self.total_week_limit)

    def counters(self) -> tuple[CapCounter, ...]:
        """Every counter the take counts in: the channel's day and week, and the total's if capped."""
        if self.total is None:
            return (self.day, self.week)
        # The total's counters are of the same day and week: only the scope differs.
        return (self.day, self.week, replace(self.day, channel=TOTAL), replace(self.week, channel=TOTAL))


class TraitSet(_Frozen):
    trait: str
    value: Any


class RichMenuSwitch(_Frozen):
    rich_menu_id: str | None  # None: back to the default menu


class StepRecord(_Frozen):
    """One thing the engine did, for logs, reports and the simulator's timeline."""

    at: datetime
    step_id: str | None
    # sent, held_out, capped_skip, deferred, window, waiting, branch, split, trait, ...; before a
    # `best` send's `sent`, chosen_by_engagement or chosen_by_default with the reason
    what: str
    detail: str = ""


class Advance(_Frozen):
    enrolment: Enrolment
    changed: bool
    dispatches: list[Dispatch] = Field(default_factory=list)
    caps: list[CapRequest] = Field(default_factory=list)
    traits: list[TraitSet] = Field(default_factory=list)
    rich_menus: list[RichMenuSwitch] = Field(default_factory=list)
    # The steps this activation ran, in order (the one it resumed at first): what the report counts
    # as "entered" per step (cems.scenario.runner, `_facts`).
    steps_run: list[str] = Field(default_factory=list)
    log: list[StepRecord] = Field(default_factory=list)

    @property
    def due_at(self) -> datetime | None:
        """When `advance` should run next (None: ended, or waiting for an event without timeout)."""
        return self.enrolment.due_at


class EnrolDecision(_Frozen):
    entered: bool
    # entered | not_a_trigger | audience | blacklisted | already_entered | still_enrolled | cooldown |
    # higher_priority_active
    reason: str
    enrolment: Enrolment | None = None
    # The customer's active enrolments in these scenarios must leave (they yield to this one):
    # `exit_enrolment(e, f"yielded:{scenario.id}", now)` for each.
    yield_scenarios: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class OtherEnrolment:
    """Another of the customer's journeys, as far as priority is concerned."""

    scenario_id: str
    priority: int
    yield_to_higher_priority: bool
    active: bool  # not ended
    # The channels its send steps may send on (`send_channels`): priority counts only where the
    # scenario can reach the customer on one of them (issue 13). None: not known, counts as reaching.
    channels: frozenset[Channel] | None = None
    # Its preference-centre topic: a customer who left it is not reached by it on any channel.
    topic: str | None = None


@dataclass(frozen=True)
class CapView:
    """The customer's cap counters as read (counter -> sends; one not read counts none), the keys of
    the sends that took each (`holders`; none for a counter stored before takes were keyed) and the
    limits. The total's counters (TOTAL) are read with the channels' when the deployment caps it."""

    limits: FrequencyCaps = field(default_factory=FrequencyCaps)
    counts: Mapping[CapCounter, int] = field(default_factory=dict)
    holders: Mapping[CapCounter, Collection[str]] = field(default_factory=dict)

    def reopens_at(
        self,
        channel: Channel,
        now: datetime,
        taken: int | Collection[str] = 0,
        key: str | None = None,
        taken_total: int | Collection[str] = 0,
    ) -> datetime | None:
        """None when one more send on `channel` is allowed now, else when the caps allow again
        (`capped_by` says which cap it is)."""
        capped = self.capped_by(channel, now, taken, key, taken_total)
        return None if capped is None else capped[1]

    def capped_by(
        self,
        channel: Channel,
        now: datetime,
        taken: int | Collection[str] = 0,
        key: str | None = None,
        taken_total: int | Collection[str] = 0,
    ) -> tuple[CapScope, datetime] | None:
        """None when one more send on `channel` is allowed now: room in the channel's counters and,
        where the deployment caps the total, in the total's. Else the cap in the way (the channel, or
        TOTAL) and when it allows again (the later reopening, when both are full).

        `taken`: this activation's earlier sends on the channel, by key (one a counter holds is in
        its count already) or how many; `taken_total`: the same on every channel, which all count
        against the total. `key`: this send's key. A send whose key took one of the channel's (or the
        total's) counters already was allowed then: it is allowed now, and its take counts nothing
        again. Without that, the redo of a journey whose worker took the caps, enqueued the send
        and died before writing would find its own take in the way and decide the send capped,
        though the message went out."""
        scopes: list[tuple[CapScope, ChannelCap, int | Collection[str]]] = [
            (channel, self.limits.of(channel), taken)
        ]
        total = self.limits.total
        if total is not None:
            scopes.append((TOTAL, total, taken_total))
        if key is not None and any(
            key in self.holders.get(c, ()) for scope, _, _ in scopes for c in counters_of(scope, now)
        ):
            return None
        capped: tuple[CapScope, datetime] | None = None
        for scope, limit, earlier in scopes:
            day, week = counters_of(scope, now)
            reopen: datetime | None = None
            if limit.per_day is not None and self._counted(day, earlier) >= limit.per_day:
                reopen = CapPeriod.DAY.next_start(now)
            if limit.per_week is not None and self._counted(week, earlier) >= limit.per_week:
                reopen = CapPeriod.WEEK.next_start(now)
            if reopen is not None and (capped is None or reopen > capped[1]):
                capped = (scope, reopen)
        return capped

    def _counted(self, counter: CapCounter, taken: int | Collection[str]) -> int:
        if isinstance(taken, int):
            return self.counts.get(counter, 0) + taken
        held = self.holders.get(counter, ())
        return self.counts.get(counter, 0) + sum(1 for key in taken if key not in held)


def dispatch_key(
    customer_id: str, scenario_id: str, version: int, step_id: str, entry: int, repeat: int = 1
) -> str:
    """`<customer>#<scenario>#v<version>#<step>#e<entry>`, plus `#<n>` for a step's n-th send in one
    journey (a loop); a key longer than LINE dispatches allow ends in a digest instead."""
    key = f"{customer_id}#{scenario_id}#v{version}#{step_id}#e{entry}" + (f"#{repeat}" if repeat > 1 else "")
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - len(digest) - 1]}#{digest}"


# --------------------------------------------------------------------------------------------- entering


def trigger_matches(scenario: Scenario, event: StoredEvent) -> bool:
    """Whether `event` is one that enters customers into `scenario` (event-like triggers only; date
    and broadcast triggers enrol without an event)."""
    trigger = scenario.trigger
    name = event_name(event)
    match trigger:
        case EventTrigger():
            return event_matches(trigger.event, trigger.where, event)
        case LineFollowTrigger():
            return name == LineEvent.FOLLOW.value and (
                trigger.include_unblocked or not event.properties.get("is_unblocked")
            )
        case SurveyAnswerTrigger():
            survey = event.properties.get("survey")
            if name != LineEvent.POSTBACK.value or not isinstance(survey, dict):
                return False
            if survey.get("question") != trigger.question or "answer" not in survey:
                return False
            return trigger.answers is None or str(survey["answer"]) in trigger.answers
        case DateTrigger() | BroadcastTrigger():
            return False  # they enrol at their moment, never on an event
        case _:
            assert_never(trigger)


def send_channels(scenario: Scenario) -> frozenset[Channel]:
    """Every channel a send step of the scenario may send on."""
    return frozenset(scenario.channels())


def reaches(channels: Collection[Channel], profile: Profile, topic: str | None = None) -> bool:
    """Whether a scenario sending on `channels` (about `topic`) can reach the customer now on one of
    them: never when they left its topic. One that sends nothing (rich menus, traits) acts on the
    customer without a channel: it reaches them."""
    if left_topic(profile.topics, topic):
        return False
    return not channels or any(plugin(channel).reachable(profile) for channel in channels)


def is_blacklisted(profile: Profile) -> bool:
    return profile.traits.get(BLACKLIST_TRAIT) is True


def enrol(
    scenario: Scenario,
    version: int,
    profile: Profile,
    trigger_event: StoredEvent | None,
    existing: Enrolment | None,
    now: datetime,
    *,
    events: Sequence[StoredEvent] = (),
    others: Sequence[OtherEnrolment] = (),
) -> EnrolDecision:
    """Whether the customer enters now; if so the new enrolment (active, due now: run `advance`
    next), with holdout assigned. `existing` is the customer's enrolment in this scenario, if any
    (a re-entry replaces it, on condition of its revision); `others` are the customer's other
    journeys; `events` the history the audience condition may read. Date and broadcast triggers
    pass no event."""
    event_like = not isinstance(scenario.trigger, DateTrigger | BroadcastTrigger)
    if event_like and (trigger_event is None or not trigger_matches(scenario, trigger_event)):
        return EnrolDecision(entered=False, reason="not_a_trigger")
    return admit(scenario, version, profile, trigger_event, existing, now, events=events, others=others)


def admit(
    scenario: Scenario,
    version: int,
    profile: Profile,
    trigger_event: StoredEvent | None,
    existing: Enrolment | None,
    now: datetime,
    *,
    events: Sequence[StoredEvent] = (),
    others: Sequence[OtherEnrolment] = (),
) -> EnrolDecision:
    """`enrol` once the trigger is settled: blacklist, re-entry, audience, priority; holdout assigned.
    A customer entering without an event (a broadcast's page, a date trigger) is decided by this
    alone, and so is "who would enter today" for an event-like trigger (the audience count, which
    asks whoever the trigger's event may come from)."""
    if is_blacklisted(profile):
        return EnrolDecision(entered=False, reason="blacklisted")
    entry = 1
    if existing is not None:
        refused = _reentry_refused(scenario, existing, now)
        if refused:
            return EnrolDecision(entered=False, reason=refused)
        entry = existing.entry + 1
    if scenario.audience is not None and not evaluate(scenario.audience, profile, events, now):
        return EnrolDecision(entered=False, reason="audience")
    if left_topic(profile.topics, scenario.topic):
        # Every send would be suppressed: entering would only make other journeys yield to it.
        return EnrolDecision(entered=False, reason="topic_left")
    # Priority is about who speaks to the customer: a scenario that cannot reach them on any of
    # its channels neither keeps them out of a lower one nor makes a lower one give them up (an
    # email-only customer is not pulled out of an email scenario by a LINE-only one).
    active = [
        o
        for o in others
        if o.active
        and o.scenario_id != scenario.id
        and (o.channels is None or reaches(o.channels, profile, o.topic))
    ]
    if scenario.exit.yield_to_higher_priority and any(o.priority > scenario.priority for o in active):
        return EnrolDecision(entered=False, reason="higher_priority_active")
    enrolment = Enrolment(
        customer_id=profile.customer_id,
        scenario_id=scenario.id,
        version=version,
        step_id=scenario.first_step().id,
        state=EnrolmentState.ACTIVE,
        holdout=in_holdout(scenario.id, profile.customer_id, scenario.entry.holdout_percent),
        entry=entry,
        entered_at=now,
        due_at=now,
        revision=0 if existing is None else existing.revision + 1,
        trigger=None if trigger_event is None else TriggerRef.of(trigger_event),
    )
    speaks = reaches(send_channels(scenario), profile, scenario.topic)
    yielding = [
        o.scenario_id
        for o in active
        if speaks and o.yield_to_higher_priority and o.priority < scenario.priority
    ]
    return EnrolDecision(entered=True, reason="entered", enrolment=enrolment, yield_scenarios=yielding)


def _reentry_refused(scenario: Scenario, existing: Enrolment, now: datetime) -> str | None:
    rule = scenario.entry
    if rule.reentry == "never":
        return "already_entered"
    if not existing.ended:
        return "still_enrolled"
    if rule.reentry == "cooldown":
        assert rule.cooldown is not None  # the model requires it
        if now - existing.entered_at < rule.cooldown:
            return "cooldown"
    return None


def exit_enrolment(enrolment: Enrolment, reason: str, now: datetime, step_id: str | None = None) -> Advance:
    """The enrolment ended early (exited) for `reason`; unchanged if it had already ended."""
    if enrolment.ended:
        return Advance(enrolment=enrolment, changed=False)
    ended = _end(enrolment, EnrolmentState.EXITED, now, reason)
    return Advance(
        enrolment=ended, changed=True, log=[StepRecord(at=now, step_id=step_id, what="exited", detail=reason)]
    )


def _end(enrolment: Enrolment, state: EnrolmentState, now: datetime, reason: str | None = None) -> Enrolment:
    return enrolment.model_copy(
        update={
            "state": state,
            "exit_reason": reason,
            "due_at": None,
            "awaiting": None,
            "ended_at": enrolment.ended_at or now,
            "revision": enrolment.revision + 1,
        }
    )


# ------------------------------------------------------------------------------------------------ events


def goal_reached(scenario: Scenario, enrolment: Enrolment, event: StoredEvent) -> bool:
    """The event is the scenario's goal, done within `goal.within` of the journey's start (the
    trigger event itself never counts)."""
    goal = scenario.goal
    if goal is None or not event_matches(goal.event, goal.where, event):
        return False
    if enrolment.trigger is not None and event.message_id == enrolment.trigger.message_id:
        return False
    start = enrolment.trigger.timestamp if enrolment.trigger is not None else enrolment.entered_at
    return start <= event.timestamp <= start + goal.within


def _awaited(enrolment: Enrolment, event: StoredEvent) -> bool:
    awaiting = enrolment.awaiting
    return (
        enrolment.state is EnrolmentState.WAITING_EVENT
        and awaiting is not None
        and awaiting.since <= event.timestamp <= awaiting.timeout_at
        and event_matches(awaiting.event, awaiting.where, event)
    )


# What a mail's fate says about the mailbox, not the customer: never a response to a send.
# An impression of an on-site message is CEMS's doing (the page showed it), not the customer's answer.
NOT_RESPONSES = frozenset({"Email Bounced", "Email Complained", "Web Message Shown"})


def _is_response(enrolment: Enrolment, event: StoredEvent) -> bool:
    if event_name(event) in NOT_RESPONSES:
        return False
    return enrolment.last_send_at is not None and event.timestamp > enrolment.last_send_at


def on_event(
    scenario: Scenario, enrolment: Enrolment, event: StoredEvent, profile: Profile, now: datetime
) -> Advance | None:
    """What one new event of the customer changes; None when nothing. The goal converts (a completed
    journey too, so the holdout is measured); a LINE unfollow exits when the journey's next sends
    are LINE only; the awaited event moves the journey to the step's `on_event` (state active, due
    now: the caller runs `advance` next); any event after a send is a response."""
    if enrolment.state is EnrolmentState.COMPLETED and goal_reached(scenario, enrolment, event):
        return _converted(enrolment, now)
    if enrolment.ended:
        return None
    if is_blacklisted(profile):
        return exit_enrolment(enrolment, "blacklisted", now, enrolment.step_id)
    if goal_reached(scenario, enrolment, event):
        return _converted(enrolment, now)
    for left in (p.channel for p in plugins() if p.opt_out_event == event_name(event)):
        if _next_sends_only_on(left, scenario, enrolment.step_id):
            return exit_enrolment(enrolment, f"opted_out:{left}", now, enrolment.step_id)
    updated = enrolment
    log: list[StepRecord] = []
    if _is_response(enrolment, event) and enrolment.unanswered_sends:
        updated = updated.model_copy(update={"unanswered_sends": 0})
    if _awaited(enrolment, event):
        step = scenario.step(enrolment.step_id or "")
        assert isinstance(step, WaitForEventStep)
        log.append(StepRecord(at=now, step_id=step.id, what="event", detail=f"{step.event} arrived"))
        if step.on_event is None:
            ended = _end(updated, EnrolmentState.COMPLETED, now)
            return Advance(enrolment=ended, changed=True, log=log)
        updated = updated.model_copy(
            update={"step_id": step.on_event, "state": EnrolmentState.ACTIVE, "due_at": now, "awaiting": None}
        )
    if updated == enrolment:
        return None
    return Advance(
        enrolment=updated.model_copy(update={"revision": enrolment.revision + 1}), changed=True, log=log
    )


def _converted(enrolment: Enrolment, now: datetime) -> Advance:
    ended = _end(enrolment, EnrolmentState.CONVERTED, now, None)
    return Advance(enrolment=ended, changed=True, log=[StepRecord(at=now, step_id=None, what="converted")])


def _next_sends_only_on(channel: Channel, scenario: Scenario, step_id: str | None) -> bool:
    """Whether the next send on every path from `step_id` is on `channel` only (no other channel to
    fall back to): leaving that channel (a LINE unfollow) then ends the journey."""
    if step_id is None:
        return False
    seen: set[str] = set()
    todo = [step_id]
    channels: set[Channel] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        step = scenario.step(current)
        if isinstance(step, SendStep):
            channels.update(step.channels())
            continue
        todo.extend(scenario.successors(step))
    return channels == {channel}


# ------------------------------------------------------------------------------------------ history needed


def needs_history(
    scenario: Scenario, enrolment: Enrolment | None, trigger_event: StoredEvent | None = None
) -> bool:
    """Whether deciding this journey now reads the customer's event history: the caller may pass
    no events (and skip the Query over everything the customer did) when this is False, and the
    decision is the same as with them. `enrolment` None: deciding an entry (`enrol`, then `advance`
    of the new journey), with `trigger_event` when an event enrols.

    What reads events, and when it matters:
    - `enrol`: only an audience condition that counts events (`event_count`);
    - `advance`: a branch condition that counts events; the goal (events since the journey's start,
      up to now); an awaited event (`is_due` and `resume` of a `waiting_event` journey); a response
      since the last send, which resets `unanswered_sends` (read only by
      `exit.no_response_after_sends`, so only with that set and something unanswered).
    A journey just entered without an event (a broadcast, a date trigger) starts now, so its goal
    could only be met by an event stamped at that very instant: its goal is not a reason to read.
    A new journey has sent nothing and waits for nothing yet (a `wait_for_event` step reached now
    waits from now on)."""
    if any(_branch_reads_events(step) for step in scenario.steps):
        return True
    if enrolment is None:
        if scenario.audience is not None and reads_events(scenario.audience):
            return True
        return scenario.goal is not None and trigger_event is not None
    if enrolment.ended:
        return False
    if enrolment.state is EnrolmentState.WAITING_EVENT or scenario.goal is not None:
        return True
    return (
        scenario.exit.no_response_after_sends is not None
        and enrolment.unanswered_sends > 0
        and enrolment.last_send_at is not None
    )


def reads_events(condition: Condition) -> bool:
    """Whether evaluating `condition` reads the customer's events (only `event_count` does)."""
    match condition:
        case EventCountCondition():
            return True
        case AllCondition() | AnyCondition():
            return any(reads_events(c) for c in condition.conditions)
        case NotCondition():
            return reads_events(condition.condition)
    return False


def _branch_reads_events(step: Step) -> bool:
    return isinstance(step, BranchStep) and any(reads_events(b.when) for b in step.branches)


# ------------------------------------------------------------------------------------------------ advance


def is_due(enrolment: Enrolment, events: Sequence[StoredEvent], now: datetime) -> bool:
    if enrolment.state is EnrolmentState.ACTIVE:
        return True
    if enrolment.state is EnrolmentState.WAITING:
        return enrolment.due_at is not None and enrolment.due_at <= now
    if enrolment.state is EnrolmentState.WAITING_EVENT and enrolment.awaiting is not None:
        return enrolment.awaiting.timeout_at <= now or any(
            _awaited(enrolment, e) and e.timestamp <= now for e in events
        )
    return False


def advance(
    scenario: Scenario,
    enrolment: Enrolment,
    profile: Profile,
    events: Sequence[StoredEvent],
    now: datetime,
    caps: CapView,
    quiet_hours: QuietHours | None = None,
) -> Advance:
    """Run the steps that are due, until a wait or the end. `events` is the customer's history (read
    by branch conditions, and checked for the goal and the awaited event in case `on_event` missed
    them). `quiet_hours`: the deployment's (CEMS_QUIET_HOURS), which the scenario's send window only
    narrows. Unchanged (`changed` false) when nothing is due."""
    if scenario.id != enrolment.scenario_id:
        raise ValueError(f"enrolment of {enrolment.scenario_id} advanced with scenario {scenario.id}")
    if enrolment.ended:
        return Advance(enrolment=enrolment, changed=False)
    if is_blacklisted(profile):
        return exit_enrolment(enrolment, "blacklisted", now, enrolment.step_id)
    past = [e for e in events if e.timestamp <= now]
    if any(goal_reached(scenario, enrolment, e) for e in past):
        return _converted(enrolment, now)
    if not is_due(enrolment, past, now):
        return Advance(enrolment=enrolment, changed=False)
    if any(_is_response(enrolment, e) for e in past):
        enrolment = enrolment.model_copy(update={"unanswered_sends": 0})
    return _Run(scenario, enrolment, profile, past, now, caps, quiet_hours).run()


class _Run:
    """One activation of `advance`: mutable while it runs, an `Advance` at the end."""

    def __init__(
        self,
        scenario: Scenario,
        enrolment: Enrolment,
        profile: Profile,
        events: Sequence[StoredEvent],
        now: datetime,
        caps: CapView,
        quiet_hours: QuietHours | None = None,
    ) -> None:
        self.scenario = scenario
        self.quiet_hours = quiet_hours
        self.start = enrolment
        self.profile = profile
        self.events = events
        self.now = now
        self.caps = caps
        self.zone = scenario.zone
        self.fields: dict[str, Any] = {}
        self.e = enrolment
        # The keys of this activation's sends, by the channel whose caps they take.
        self.taken: dict[Channel, list[str]] = {p.channel: [] for p in plugins()}
        self.out: dict[str, list[Any]] = {
            "dispatches": [],
            "caps": [],
            "traits": [],
            "rich_menus": [],
            "log": [],
            "steps_run": [],
        }

    # -- state ----------------------------------------------------------------------------------------

    def update(self, **values: Any) -> None:
        self.e = self.e.model_copy(update=values)

    def note(self, step_id: str | None, what: str, detail: str = "") -> None:
        self.out["log"].append(StepRecord(at=self.now, step_id=step_id, what=what, detail=detail))

    def local(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def finish(self) -> Advance:
        final = self.e.model_copy(update={"revision": self.start.revision + 1})
        return Advance(enrolment=final, changed=True, **self.out)

    def end(self, state: EnrolmentState, step_id: str | None, reason: str | None = None) -> Advance:
        self.note(step_id, state.value, reason or "")
        self.e = _end(self.e, state, self.now, reason).model_copy(update={"step_id": step_id})
        return self.finish()

    def wait_until(self, due: datetime, state: EnrolmentState = EnrolmentState.WAITING) -> Advance:
        self.update(state=state, due_at=due)
        return self.finish()

    # -- running ----------------------------------------------------------------------------------------

    def run(self) -> Advance:
        step_id = self.resume()
        for _ in range(MAX_STEPS_PER_ACTIVATION):
            if step_id is None:
                return self.end(EnrolmentState.COMPLETED, self.e.step_id)
            self.update(step_id=step_id, state=EnrolmentState.ACTIVE, due_at=self.now, awaiting=None)
            self.out["steps_run"].append(step_id)
            outcome = self.step(self.scenario.step(step_id))
            if isinstance(outcome, Advance):
                return outcome
            step_id = outcome
        self.note(step_id, "paused", f"{MAX_STEPS_PER_ACTIVATION} steps in one activation")
        self.update(step_id=step_id, state=EnrolmentState.ACTIVE, due_at=self.now)
        return self.finish()

    def resume(self) -> str | None:
        """The step to run now: the current one, or after a finished wait the one that follows."""
        step = self.scenario.step(self.e.step_id or "")
        if self.e.state is EnrolmentState.WAITING and isinstance(step, WaitStep):
            return self.scenario.next_of(step)
        if self.e.state is EnrolmentState.WAITING_EVENT and isinstance(step, WaitForEventStep):
            if any(_awaited(self.e, ev) for ev in self.events):
                self.note(step.id, "event", f"{step.event} arrived")
                if step.on_event is None:
                    return None
                return step.on_event
            self.note(step.id, "timeout", f"no {step.event}")
            return step.on_timeout or self.scenario.following(step.id)
        return step.id

    def step(self, step: Step) -> str | Advance | None:
        """Run one step: the id of the step to run next (None: the end), or the activation's result.
        Every step type has its arm: a new one in the Step union makes mypy name this match."""
        match step:
            case SendStep():
                return self.send(step)
            case WaitStep():
                return self.wait(step)
            case WaitForEventStep():
                timeout_at = self.now + step.timeout
                self.update(
                    awaiting=Awaiting(
                        event=step.event, where=step.where, since=self.now, timeout_at=timeout_at
                    )
                )
                self.note(step.id, "waiting_event", f"{step.event} until {self.local(timeout_at)}")
                return self.wait_until(timeout_at, EnrolmentState.WAITING_EVENT)
            case BranchStep():
                return self.branch(step)
            case SplitStep():
                variant = pick_variant(self.scenario.id, step.id, self.e.customer_id, step.variants)
                self.update(variant=variant.name)
                self.note(step.id, "split", variant.name)
                return variant.next
            case SetTraitStep():
                return self.set_trait(step)
            case RichMenuStep():
                if self.e.holdout:
                    self.note(step.id, "held_out", "rich menu not switched")
                else:
                    self.out["rich_menus"].append(RichMenuSwitch(rich_menu_id=step.rich_menu_id))
                    self.note(step.id, "rich_menu", step.rich_menu_id or "default")
                return self.scenario.next_of(step)
            case EndStep():
                return self.end(EnrolmentState.COMPLETED, step.id)
            case _:
                assert_never(step)

    def wait(self, step: WaitStep) -> str | Advance | None:
        trigger_time = self.e.trigger.timestamp if self.e.trigger is not None else None
        due = wait_due(step, self.now, self.zone, self.profile, trigger_time)
        if due is None:
            return self.end(EnrolmentState.EXITED, step.id, "no_date")
        if due <= self.now:
            return self.scenario.next_of(step)
        self.note(step.id, "waiting", f"until {self.local(due)}")
        return self.wait_until(due)

    def branch(self, step: BranchStep) -> str | None:
        for index, branch in enumerate(step.branches):
            if evaluate(branch.when, self.profile, self.events, self.now):
                self.note(step.id, "branch", f"branch {index + 1} → {branch.next}")
                return branch.next
        otherwise = step.otherwise or self.scenario.following(step.id)
        self.note(step.id, "branch", f"otherwise → {otherwise}")
        return otherwise

    def scope(self, step: Step) -> dict[str, Any]:
        trigger = self.e.trigger.as_event(self.e.customer_id) if self.e.trigger is not None else None
        return step_scope(self.scenario, self.e.version, step, self.profile, trigger)

    def set_trait(self, step: SetTraitStep) -> str | Advance | None:
        value = step.value
        if isinstance(value, str):
            try:
                value = render(value, self.scope(step))
            except RenderError as exc:
                return self.end(EnrolmentState.EXITED, step.id, f"render_failed: {exc}")
        if self.e.holdout:
            self.note(step.id, "held_out", f"{step.trait} not set")
        else:
            self.out["traits"].append(TraitSet(trait=step.trait, value=value))
            # later steps of this activation see the new value
            self.profile = self.profile.model_copy(
                update={"traits": {**self.profile.traits, step.trait: value}}
            )
            self.note(step.id, "trait", f"{step.trait} = {value!r}")
        return self.scenario.next_of(step)

    def send(self, step: SendStep) -> str | Advance | None:
        limit = self.scenario.exit.no_response_after_sends
        if limit is not None and self.e.unanswered_sends >= limit:
            return self.end(EnrolmentState.EXITED, step.id, "no_response")
        if not may_send(self.scenario.send_window, self.quiet_hours, self.now, self.zone):
            opening = send_opening(self.scenario.send_window, self.quiet_hours, self.now, self.zone)
            if opening is None:
                # The scenario's window never meets the time the deployment's quiet hours leave:
                # waiting would never end, and sending would break one of the two.
                return self.end(EnrolmentState.EXITED, step.id, "no_send_hours")
            self.note(step.id, "window", f"quiet hours; sends at {self.local(opening)}")
            return self.wait_until(opening)
        if left_topic(self.profile.topics, self.scenario.topic):
            # The customer left this scenario's topic (the preference centre): as for a channel they
            # opted out of, nothing is sent, the journey ends, and the report counts it suppressed.
            return self.end(EnrolmentState.EXITED, step.id, f"unreachable:topic:{self.scenario.topic}")
        reachable, choice = self.channels_for(step)
        if not reachable:
            return self.end(EnrolmentState.EXITED, step.id, f"unreachable:{option_text(step.channel)}")
        if self.e.holdout:
            self.note(step.id, "held_out", "_then_".join(reachable))
            return self.scenario.next_of(step)
        # The cap counted is the channel sent on; a fallback is sent only when that one turns out
        # unreachable, in place of it.
        cap_channel = reachable[0]
        try:  # before the cap: content that cannot render fails whether or not it could be sent now
            dispatch = self.render(step, reachable)
        except (RenderError, ValidationError, ValueError) as exc:
            return self.end(EnrolmentState.EXITED, step.id, f"render_failed: {_reason(exc)}")
        earlier = [key for keys in self.taken.values() for key in keys]  # all count against the total
        capped = self.caps.capped_by(cap_channel, self.now, self.taken[cap_channel], dispatch.key, earlier)
        if capped is not None:
            return self.capped(step, capped[0], capped[1])
        self.out["dispatches"].append(dispatch)
        limits = self.caps.limits.of(cap_channel)
        total = self.caps.limits.total or ChannelCap(per_day=None, per_week=None)
        day, week = counters_of(cap_channel, self.now)
        self.out["caps"].append(
            CapRequest(
                channel=cap_channel,
                day=day,
                week=week,
                day_limit=limits.per_day,
                week_limit=limits.per_week,
                key=dispatch.key,
                total_day_limit=total.per_day,
                total_week_limit=total.per_week,
            )
        )
        self.taken[cap_channel].append(dispatch.key)
        if choice is not None:  # recorded with the send it chose for, never for one not made
            self.note(step.id, f"chosen_by_{choice.basis}", choice.reason)
        self.update(
            sends=self.e.sends + 1,
            unanswered_sends=self.e.unanswered_sends + 1,
            last_send_at=self.now,
            last_send_step=step.id,
            last_send_channel=dispatch.channel,
            step_sends={**self.e.step_sends, step.id: self.e.step_sends.get(step.id, 0) + 1},
            messages=[
                *self.e.messages,
                SentMessage(step_id=step.id, channel=dispatch.channel, at=self.now),
            ][-MESSAGES_KEPT:],
            deferred_since=None,
        )
        self.note(step.id, "sent", dispatch.route)
        return self.scenario.next_of(step)

    def channels_for(self, step: SendStep) -> tuple[tuple[Channel, ...], ChannelChoice | None]:
        """Where this send may go for this customer now, in order (the first is sent to, the rest are
        its fallbacks): the step's reachable channels; for `best`, those ranked by the customer's
        engagement (cems.activity.choose), with the choice and its reason."""
        if not step.chooses_best:
            return route(step.channel, self.profile), None
        choice = choose(route(step.channels(), self.profile), self.profile, self.now)
        return (choice.channels, choice) if choice is not None else ((), None)

    def capped(self, step: SendStep, channel: CapScope, reopens: datetime) -> str | Advance | None:
        """`channel`: the cap in the way, the send's channel or TOTAL (every channel's sends)."""
        rule = self.scenario.frequency_cap
        if rule.when_capped == "skip":
            self.note(step.id, "capped_skip", channel)
            self.update(deferred_since=None)
            return self.scenario.next_of(step)
        since = self.e.deferred_since or self.now
        if self.now - since >= rule.give_up_after:
            self.note(step.id, "capped_gave_up", f"deferred since {self.local(since)}")
            self.update(deferred_since=None)
            return self.scenario.next_of(step)
        after = max(reopens, self.now)
        # This send was inside the send hours just now, so they open again (at worst a week on).
        due = send_opening(self.scenario.send_window, self.quiet_hours, after, self.zone) or after
        due = min(due, max(since + rule.give_up_after, self.now + timedelta(minutes=1)))
        self.update(deferred_since=since)
        cap = "total cap (all channels)" if channel is TOTAL else f"{channel} cap"
        self.note(step.id, "deferred", f"{cap} reached; again at {self.local(due)}")
        return self.wait_until(due)

    def render(self, step: SendStep, channels: tuple[Channel, ...]) -> Dispatch:
        scope = self.scope(step)
        repeat = self.e.step_sends.get(step.id, 0) + 1
        key = dispatch_key(
            self.e.customer_id, self.scenario.id, self.e.version, step.id, self.e.entry, repeat
        )
        send = SendContext(
            key=key,
            customer_id=self.e.customer_id,
            scenario_id=self.scenario.id,
            version=self.e.version,
            step_id=step.id,
            variant=self.e.variant,
            track_clicks=self.scenario.tracking.clicks,
            track_opens=self.scenario.tracking.opens,
            topic=self.scenario.topic,
        )
        return Dispatch(
            key=key,
            channel=channels[0],
            fallbacks=channels[1:],
            customer_id=self.e.customer_id,
            scenario_id=self.scenario.id,
            version=self.e.version,
            step_id=step.id,
            entry=self.e.entry,
            variant=self.e.variant,
            messages={c: render_step(c, step, scope, send) for c in channels},
            track_clicks=self.scenario.tracking.clicks,
            track_opens=self.scenario.tracking.opens,
            per_customer_clicks=uses_link_clicks(self.scenario),
        )


# ------------------------------------------------------------------------- rendering (shared with test sends)


def step_scope(
    scenario: Scenario, version: int, step: Step, profile: Profile, trigger: StoredEvent | None
) -> dict[str, Any]:
    """What a step's templates see (cems.templates.template_scope); `cems scenario test-send` uses
    it too, so a test renders as the journey would."""
    return template_scope(
        profile,
        trigger,
        step={"id": step.id, "name": step.name, "type": step.type},
        scenario={"id": scenario.id, "name": scenario.name, "version": version},
        time_zone=scenario.time_zone,
    )


def render_step(channel: Channel, step: SendStep, scope: dict[str, Any], send: SendContext) -> Any:
    """A send step's content for `channel` rendered and checked, all or nothing (RenderError,
    ValidationError or ValueError says why), as that channel's plugin makes it."""
    return plugin(channel).render(step, scope, send)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(err.get("msg", "")) for err in exc.errors())[:500]
    return str(exc)[:500]
