"""Play one customer's timeline through a scenario in memory: no AWS, nothing sent.

The driver does what `trigger` and `tick` will do, with dictionaries for tables: each event (in time
order) updates the profile through ingestion's own rule set (cems.profile_facts: traits and consent,
orders, channel states), goes to `on_event`, and may enrol the customer; a date trigger's entry is
rescheduled from the profile as it stands after an event that moved its date, as the trigger
function does. Between events the clock jumps from one due time to the next and `advance` runs
there. Every send is recorded with its rendered content, so `cems scenario simulate` can print the
timeline and tests can check it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Never, assert_never

from cems import clock
from cems.channels.registry import plugin, plugins
from cems.models import (
    LINE_SOURCE_ID,
    MessageType,
    Profile,
    StoredEvent,
)
from cems.profile_facts import apply_event
from cems.scenario.caps import CapCounter
from cems.scenario.conditions import RESERVED_EVENT_SOURCES
from cems.scenario.engine import (
    Advance,
    CapView,
    Dispatch,
    Enrolment,
    advance,
    enrol,
    is_due,
    on_event,
    trigger_matches,
)
from cems.scenario.model import (
    BranchStep,
    BroadcastTrigger,
    DateTrigger,
    EndStep,
    EventTrigger,
    FrequencyCaps,
    LineFollowTrigger,
    QuietHours,
    RichMenuStep,
    Scenario,
    SendStep,
    SetTraitStep,
    SplitStep,
    SurveyAnswerTrigger,
    WaitForEventStep,
    WaitStep,
)
from cems.scenario.timing import cron_next, date_trigger_due, profile_date
from cems.trust import Proof

DEFAULT_CUSTOMER = "cus_sim"
# A timeline longer than this (events or activations) is cut short: a scenario never needs it.
MAX_ACTIVATIONS = 10_000
SUMMARY_LENGTH = 40


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime  # UTC
    step_id: str | None
    what: str  # entered, sent, held_out, split, branch, deferred, capped_skip, exited, converted, ...
    detail: str = ""
    channel: str | None = None
    dispatch: Dispatch | None = None


@dataclass
class Simulation:
    scenario: Scenario
    customer_id: str
    timeline: list[TimelineEntry] = field(default_factory=list)
    enrolment: Enrolment | None = None
    profile: Profile | None = None

    @property
    def sends(self) -> list[TimelineEntry]:
        return [t for t in self.timeline if t.what == "sent"]

    def lines(self) -> list[str]:
        """The timeline as text, times in the scenario's time zone."""
        zone = self.scenario.zone
        out = [f"scenario {self.scenario.id} ({self.scenario.time_zone}), customer {self.customer_id}"]
        for entry in self.timeline:
            when = entry.at.astimezone(zone).strftime("%Y-%m-%d %H:%M %a")
            step = entry.step_id or "-"
            if entry.what == "sent" and entry.dispatch is not None:
                text = f"{entry.channel:<15} {summary(entry.dispatch)}"
            else:
                text = f"{entry.what:<15} {entry.detail}".rstrip()
            out.append(f"{when}  {step:<18} {text}")
        final = self.enrolment
        if final is None:
            out.append("not enrolled")
        else:
            reason = f" ({final.exit_reason})" if final.exit_reason else ""
            out.append(
                f"holdout: {'yes (sent nothing)' if final.holdout else 'no'}; "
                f"variant: {final.variant or '-'}; final: {final.state.value}{reason}; "
                f"sends: {len(self.sends)}"
            )
        return out


def summary(dispatch: Dispatch) -> str:
    """A short line of what a dispatch says, by each channel's plugin (LINE: the first message's text;
    email: the subject), the channel sent on first and each fallback after it."""
    parts: list[str] = []
    for channel in (dispatch.channel, *dispatch.fallbacks):
        message = dispatch.messages.get(channel)
        if message is not None:
            prefix = f"{channel} fallback: " if parts else ""
            parts.append(prefix + _short(plugin(channel).summary(message)))
    return " | ".join(parts)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SUMMARY_LENGTH else flat[: SUMMARY_LENGTH - 1] + "…"


# ------------------------------------------------------------------------------------------------ inputs


def default_profile(customer_id: str, first_seen_at: datetime) -> Profile:
    """A customer reachable with consent on every channel (a linked LINE friend, an email address
    with consent, ...), as each channel's plugin makes them."""
    profile = Profile(customer_id=customer_id, first_seen_at=first_seen_at, updated_at=first_seen_at)
    for channel in plugins():
        profile = channel.make_reachable(profile)
    return profile


def profile_from(data: dict[str, Any], customer_id: str, first_seen_at: datetime) -> Profile:
    """The default profile with `data` (Profile fields, JSON) laid over it; traits are merged."""
    base = default_profile(str(data.get("customer_id") or customer_id), first_seen_at).model_dump()
    merged = {**base, **{k: v for k, v in data.items() if k != "traits"}}
    merged["traits"] = {**base["traits"], **data.get("traits", {})}
    for computed in ("purchase_count", "monetary_total", "first_purchase_at", "last_purchase_at"):
        merged.pop(computed, None)
    return Profile.model_validate(merged)


def events_from(data: Sequence[dict[str, Any]], customer_id: str) -> list[StoredEvent]:
    """Segment-like events (`type` track by default, `event`, `timestamp`, `properties`, ...) as
    stored events of the customer, in time order. A shop's event is taken as sent with its server
    key unless its `proof` says otherwise (e.g. "verified": a signed-in browser, whose opt-in waits
    for the confirmation mail); LINE's and engage's events are their sources' (cems.trust)."""
    out: list[StoredEvent] = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict) or "timestamp" not in raw:
            raise ValueError(f"event {i} needs a timestamp")
        at = datetime.fromisoformat(str(raw["timestamp"]).replace("Z", "+00:00"))
        if at.tzinfo is None:
            raise ValueError(f"event {i}: give the timestamp's offset, e.g. +09:00")
        kind = MessageType(raw.get("type", "track"))
        name = raw.get("event")
        # LINE and engagement events are simulated as stored by their own sources.
        source = RESERVED_EVENT_SOURCES.get(name, "shop") if isinstance(name, str) else "shop"
        out.append(
            StoredEvent(
                customer_id=customer_id,
                site_id=str(raw.get("site_id") or source),
                type=kind,
                message_id=str(raw.get("messageId") or f"sim-{i}"),
                event=name,
                proof=Proof(raw.get("proof") or Proof.SERVER).value,
                timestamp=at.astimezone(UTC),
                received_at=at.astimezone(UTC),
                properties=raw.get("properties") or {},
                traits=raw.get("traits") or {},
            )
        )
    return sorted(out, key=lambda e: e.timestamp)


# -------------------------------------------------------------------------------------------------- driver


def simulate(
    scenario: Scenario,
    events: Sequence[StoredEvent],
    profile: Profile | None = None,
    *,
    caps: FrequencyCaps | None = None,
    cap_counts: dict[CapCounter, int] | None = None,
    quiet_hours: QuietHours | None = None,
    version: int | None = None,
    start: datetime | None = None,
    horizon: timedelta = timedelta(days=400),
) -> Simulation:
    """Play `events` (one customer's, any order) through `scenario`. Event triggers enrol on their
    event; a date or broadcast trigger enrols at its first moment after `start` (default: the first
    event, else the profile's first_seen_at). Runs until nothing more is due, or `horizon` after
    the start. `caps` and `quiet_hours`: the deployment's, as the runner is given them."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    first = ordered[0].timestamp if ordered else None
    origin = start or first or (profile.first_seen_at if profile else clock.now())
    customer_id = (
        profile.customer_id if profile else (ordered[0].customer_id if ordered else DEFAULT_CUSTOMER)
    )
    current = profile or default_profile(customer_id, origin)
    check_steps(scenario)
    sim = Simulation(scenario=scenario, customer_id=customer_id, profile=current)
    limits = caps or FrequencyCaps()
    counts = dict(cap_counts or {})
    entry_at = _scheduled_entry(scenario, current, origin)
    end = origin + horizon
    history: list[StoredEvent] = []
    pending = list(ordered)
    for _ in range(MAX_ACTIVATIONS):
        enrolment = sim.enrolment
        due = enrolment.due_at if enrolment is not None and not enrolment.ended else None
        moments = [m for m in (pending[0].timestamp if pending else None, due, entry_at) if m is not None]
        if not moments or min(moments) > end:
            break
        now = min(moments)
        if pending and pending[0].timestamp == now:
            event = _as_stored(pending.pop(0), current)
            before, current = current, apply_event(current, event)
            entry_at = _rescheduled(scenario, before, current, now, entry_at)
            history.append(event)
            _on_event(sim, event, current, now, history)
        elif entry_at is not None and entry_at == now:
            entry_at = _next_broadcast(scenario, now)
            _enrol(sim, None, current, now, history)
        sim.profile = current
        current = _run_due(sim, current, history, now, limits, counts, quiet_hours)
    return sim


def _scheduled_entry(scenario: Scenario, profile: Profile, origin: datetime) -> datetime | None:
    """The first entry a scheduled trigger makes after `origin`; None for one that enrols on events."""
    trigger = scenario.trigger
    match trigger:
        case DateTrigger():
            return date_trigger_due(trigger, profile, scenario.zone, origin)
        case BroadcastTrigger():
            if trigger.at is not None:
                return trigger.at.astimezone(UTC) if trigger.at >= origin else None
            assert trigger.cron is not None
            return cron_next(trigger.cron, origin, scenario.zone)
        case EventTrigger() | LineFollowTrigger() | SurveyAnswerTrigger():
            return None
        case _:
            assert_never(trigger)


def _as_stored(event: StoredEvent, profile: Profile) -> StoredEvent:
    """The event as its source stores it: LINE's webhook names the friend's LINE user id (the
    profile's), and an event given without its proof is taken as a server's (as `events_from` does)."""
    update: dict[str, Any] = {}
    if event.site_id == LINE_SOURCE_ID and event.line_user_id is None and profile.line_user_id:
        update["line_user_id"] = profile.line_user_id
    if event.proof is None:
        update["proof"] = Proof.SERVER.value
    return event.model_copy(update=update) if update else event


def _rescheduled(
    scenario: Scenario, before: Profile, after: Profile, now: datetime, entry_at: datetime | None
) -> datetime | None:
    """A date trigger's entry after an event: when the event moved the date it watches (a purchase
    given in the events, an identify's trait), the entry follows the profile as it stands now, as
    the trigger function reschedules it (runner.schedule_date_trigger); otherwise it stays."""
    trigger = scenario.trigger
    if not isinstance(trigger, DateTrigger):
        return entry_at
    zone = scenario.zone
    if profile_date(trigger.date, before, None, zone) == profile_date(trigger.date, after, None, zone):
        return entry_at
    return date_trigger_due(trigger, after, zone, now)


def _next_broadcast(scenario: Scenario, now: datetime) -> datetime | None:
    trigger = scenario.trigger
    if isinstance(trigger, BroadcastTrigger) and trigger.cron is not None:
        return cron_next(trigger.cron, now, scenario.zone)
    if isinstance(trigger, DateTrigger) and trigger.yearly:
        return None  # one year is enough for a simulation
    return None


def _on_event(
    sim: Simulation, event: StoredEvent, profile: Profile, now: datetime, history: list[StoredEvent]
) -> None:
    enrolment = sim.enrolment
    if enrolment is not None:
        result = on_event(sim.scenario, enrolment, event, profile, now)
        if result is not None:
            _record(sim, result)
    if trigger_matches(sim.scenario, event):
        _enrol(sim, event, profile, now, history)


def _enrol(
    sim: Simulation, event: StoredEvent | None, profile: Profile, now: datetime, history: list[StoredEvent]
) -> None:
    version = sim.scenario.version
    decision = enrol(sim.scenario, version, profile, event, sim.enrolment, now, events=history)
    label = event.event if event is not None else sim.scenario.trigger.type
    if not decision.entered or decision.enrolment is None:
        if decision.reason not in ("still_enrolled", "not_a_trigger"):
            sim.timeline.append(
                TimelineEntry(at=now, step_id=None, what="not_entered", detail=decision.reason)
            )
        return
    enrolment = decision.enrolment
    group = "holdout (sends nothing)" if enrolment.holdout else "treatment"
    detail = f"{label}: entry {enrolment.entry}, {group}"
    sim.timeline.append(TimelineEntry(at=now, step_id=None, what="entered", detail=detail))
    sim.enrolment = enrolment


def _run_due(
    sim: Simulation,
    profile: Profile,
    history: list[StoredEvent],
    now: datetime,
    limits: FrequencyCaps,
    counts: dict[CapCounter, int],
    quiet_hours: QuietHours | None = None,
) -> Profile:
    for _ in range(10):  # a cap refusal would re-run; in memory the counts are always current
        enrolment = sim.enrolment
        if enrolment is None or enrolment.ended or not is_due(enrolment, history, now):
            return profile
        view = CapView(limits, dict(counts))
        result = advance(sim.scenario, enrolment, profile, history, now, view, quiet_hours)
        if not result.changed:
            return profile
        for request in result.caps:
            for counter in request.counters():  # the total's too, where the deployment caps it
                counts[counter] = counts.get(counter, 0) + 1
        if result.traits:
            traits = {**profile.traits, **{t.trait: t.value for t in result.traits}}
            profile = profile.model_copy(update={"traits": traits})
        _record(sim, result)
        sim.profile = profile
    return profile


_QUIET = {"waiting", "waiting_event", "event", "timeout"}


def _record(sim: Simulation, result: Advance) -> None:
    dispatches = {d.step_id: d for d in result.dispatches}
    for record in result.log:
        if record.what in _QUIET:
            continue
        dispatch = dispatches.get(record.step_id or "") if record.what == "sent" else None
        sim.timeline.append(
            TimelineEntry(
                at=record.at,
                step_id=record.step_id,
                what=record.what,
                detail=record.detail,
                channel=dispatch.route if dispatch is not None else None,
                dispatch=dispatch,
            )
        )
    sim.enrolment = result.enrolment


# ------------------------------------------------------------------------------------------------ steps


class UnknownStep(ValueError):
    """A step simulate does not know how to play: refused, never skipped."""


def check_steps(scenario: Scenario) -> None:
    """Refuse a scenario with a step type simulate cannot play, before playing anything. Each arm
    says how the simulation plays the type; a new type in the Step union makes mypy name this match
    (the default arm takes only Never), and one slipped past validation raises UnknownStep."""
    for step in scenario.steps:
        match step:
            case SendStep():
                pass  # rendered and recorded on the timeline, nothing sent; caps counted in memory
            case WaitStep() | WaitForEventStep():
                pass  # the clock jumps to the due time, or to the awaited event of the events given
            case BranchStep() | SplitStep():
                pass  # decided by the engine against the simulated profile and events
            case SetTraitStep():
                pass  # the trait is laid over the simulated profile (_run_due)
            case RichMenuStep():
                pass  # noted on the timeline; LINE is not called
            case EndStep():
                pass
            case _:
                raise _unknown_step(step)


def _unknown_step(step: Never) -> UnknownStep:
    """The error for a step of no known type (typed Never: mypy names a type the match lacks)."""
    kind = getattr(step, "type", type(step).__name__)
    return UnknownStep(
        f"step {getattr(step, 'id', '?')!r}: simulate cannot play a step of type {kind!r}; "
        "teach cems.scenario.simulate.check_steps how to play it"
    )


# ----------------------------------------------------------------------------------------------- files


def simulate_files(
    scenario: Scenario,
    events_text: str,
    profile_text: str | None = None,
    *,
    caps: FrequencyCaps | None = None,
    quiet_hours: QuietHours | None = None,
) -> Simulation:
    """`cems scenario simulate`: events as a JSON list, the profile as a JSON object (optional);
    `caps` and `quiet_hours` the deployment's (the CLI reads them as the functions do)."""
    raw_events = json.loads(events_text)
    if not isinstance(raw_events, list):
        raise ValueError("the events file holds a JSON list of events")
    raw_profile = json.loads(profile_text) if profile_text is not None else {}
    if not isinstance(raw_profile, dict):
        raise ValueError("the profile file holds a JSON object")
    customer_id = str(raw_profile.get("customer_id") or _user_id(raw_events) or DEFAULT_CUSTOMER)
    events = events_from(raw_events, customer_id)
    first_seen = events[0].timestamp if events else clock.now()
    if "first_seen_at" not in raw_profile:
        first_seen -= timedelta(days=30)
    profile = profile_from(raw_profile, customer_id, first_seen)
    return simulate(scenario, events, profile, caps=caps, quiet_hours=quiet_hours)


def _user_id(events: list[Any]) -> str | None:
    for raw in events:
        if isinstance(raw, dict) and raw.get("userId"):
            return str(raw["userId"])
    return None
