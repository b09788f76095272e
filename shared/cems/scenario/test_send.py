"""A test send (`cems scenario test-send`): one step of a scenario file, rendered with a sample or
given profile, as a dispatch for ONE staff recipient, marked as a test.

The step is rendered exactly as the engine renders it (`engine.step_scope` and
`engine.render_step`, the channel's plugin), so what the staff member receives is what a customer with
that profile would. The dispatch is the channel's normal queue message marked as a test by its plugin
(`test_message`): the senders send it to the given address (a LINE user id, a mail address) only,
never to the customer whose profile was used, and count nothing in the reports
(tracking tokens of a test mail say `test`, so clicks, opens and unsubscribes change nothing).
Every test send has a new idempotency key, `test#<scenario>#<step>#<uuid4>`: sending the same step
again sends again.

Nothing here touches AWS; the CLI reads the profile and enqueues the dispatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from cems import clock
from cems.channels.plugin import SendContext
from cems.channels.registry import plugin, plugins
from cems.models import Channel, Profile, StoredEvent
from cems.scenario.engine import Dispatch, render_step, step_scope
from cems.scenario.model import Scenario, SendStep
from cems.scenario.simulate import default_profile, events_from, profile_from, summary
from cems.templates import RenderError

# The customer id of the sample profile (no such customer exists; nothing is written about it).
TEST_CUSTOMER = "cus_test"
KEY_PREFIX = "test"
MAX_KEY_LENGTH = 256  # the senders' dispatch idempotency_key
RECIPIENT_HELP = "--to takes " + " or ".join(p.test_address_help for p in plugins())


@dataclass(frozen=True)
class Recipient:
    """Where the test goes: a LINE user id or an email address (never printed or logged)."""

    channel: Channel
    address: str

    def __repr__(self) -> str:  # keeps the id or address out of tracebacks and debug output
        return f"Recipient(channel={self.channel!r})"


@dataclass(frozen=True)
class PreparedSend:
    """What to enqueue: the dispatch (its SQS body) on the channel's queue."""

    channel: Channel
    step_id: str
    key: str
    dispatch: Any  # the channel's queue message (its plugin's `test_message`): has to_sqs_body()
    # A short line of the content (the channel plugin's summary: LINE's first text, a mail's subject).
    preview: str

    def body(self) -> str:
        return str(self.dispatch.to_sqs_body())


def parse_recipient(spec: str) -> Recipient:
    """`<channel>:<address>` (`line:<userId>`, `email:<address>`); ValueError (without the value)
    when malformed, by the channel's plugin."""
    kind, sep, value = spec.strip().partition(":")
    value = value.strip()
    if not sep or kind not in {p.channel.value for p in plugins()} or not value:
        raise ValueError(RECIPIENT_HELP)
    channel = Channel(kind)
    return Recipient(channel, plugin(channel).test_address(value))


def fresh_key(scenario_id: str, step_id: str) -> str:
    """`test#<scenario>#<step>#<uuid4>`: a new key for every test send."""
    suffix = uuid.uuid4().hex
    head = f"{KEY_PREFIX}#{scenario_id}#{step_id}"
    return f"{head[: MAX_KEY_LENGTH - len(suffix) - 1]}#{suffix}"


def sample_profile() -> Profile:
    """The profile a test renders with when none is given (simulate's default: both channels)."""
    return default_profile(TEST_CUSTOMER, clock.now() - timedelta(days=30))


def profile_from_json(data: Any) -> Profile:
    """A profile JSON object (as `cems scenario simulate --profile` takes) laid over the sample."""
    if not isinstance(data, dict):
        raise ValueError("the profile file holds a JSON object of profile fields (traits, ...)")
    if not isinstance(data.get("traits", {}), dict):
        raise ValueError("the profile file is not a profile: traits is a JSON object")
    first_seen = clock.now() - timedelta(days=30)
    try:
        return profile_from(data, TEST_CUSTOMER, first_seen)
    except ValidationError as exc:
        raise ValueError(f"the profile file is not a profile: {_errors(exc)}") from None


def event_from_json(data: Any, customer_id: str) -> StoredEvent:
    """The trigger event for templates' `event`: one Segment-like event (an object, or a list of one)
    with a timestamp, as in `cems scenario simulate --events`."""
    events: Sequence[Any] = data if isinstance(data, list) else [data]
    if len(events) != 1 or not isinstance(events[0], dict):
        raise ValueError("the event file holds one event: a JSON object with event, timestamp, properties")
    try:
        return events_from(events, customer_id)[0]
    except ValidationError as exc:
        raise ValueError(f"the event file is not an event: {_errors(exc)}") from None


def build_test_send(
    scenario: Scenario,
    step_id: str,
    recipient: Recipient | str,
    profile: Profile | None = None,
    event: StoredEvent | None = None,
) -> PreparedSend:
    """The test dispatch of `step_id` for `recipient`, rendered with `profile` (default: the sample
    profile) and `event` as the trigger. ValueError with a plain message when it cannot be made."""
    to = parse_recipient(recipient) if isinstance(recipient, str) else recipient
    step = _send_step(scenario, step_id)
    offered = step.channels()
    if to.channel not in offered:
        only = " or ".join(plugin(c).title for c in offered)
        give = " or ".join(plugin(c).test_address_help for c in offered)
        raise ValueError(f"step {step_id} sends on {only} only; give --to {give}")
    who = profile or sample_profile()
    scope = step_scope(scenario, scenario.version, step, who, event)
    key = fresh_key(scenario.id, step.id)
    send = _send_context(scenario, step, who, key)
    try:
        message = render_step(to.channel, step, scope, send)
        dispatch = plugin(to.channel).test_message(message, send, step, to.address)
    except RenderError as exc:
        raise ValueError(_render_failure(step.id, exc, event)) from None
    except ValidationError as exc:
        raise ValueError(f"step {step.id} cannot be sent after rendering: {_errors(exc)}") from None
    preview = _preview(scenario, step, who, key, to.channel, message)
    return PreparedSend(to.channel, step.id, key, dispatch, preview)


@dataclass(frozen=True)
class RenderedContent:
    """One channel's content of a send step, rendered as the engine renders it, for a preview."""

    channel: Channel
    message: Any  # the channel plugin's rendered message (LineDispatch, EmailMessage)
    preview: str  # the plugin's one-line summary

    def content(self) -> dict[str, Any]:
        """What an operator reads: the message's content fields as JSON (the dispatch's bookkeeping
        fields, its key and the sample customer, say nothing about the content)."""
        dumped: dict[str, Any] = self.message.model_dump(mode="json")
        fields = plugin(self.channel).preview_fields
        return {name: dumped.get(name) for name in fields} if fields else dumped


def render_preview(
    scenario: Scenario, step_id: str, profile: Profile | None = None, event: StoredEvent | None = None
) -> list[RenderedContent]:
    """`step_id` rendered on each channel it may send on (a `line_or_email` step: both, in order of
    preference), with `profile` (default: the sample profile) and `event` as the trigger, exactly as
    `build_test_send` renders it; nothing is queued. ValueError with a plain message when it cannot
    be rendered (no such step, not a send step, a template the profile cannot fill)."""
    step = _send_step(scenario, step_id)
    who = profile or sample_profile()
    scope = step_scope(scenario, scenario.version, step, who, event)
    send = _send_context(scenario, step, who, fresh_key(scenario.id, step.id))
    rendered = []
    for channel in step.channels():
        try:
            message = render_step(channel, step, scope, send)
        except RenderError as exc:
            raise ValueError(_render_failure(step.id, exc, event)) from None
        except ValidationError as exc:
            raise ValueError(f"step {step.id} cannot be sent after rendering: {_errors(exc)}") from None
        rendered.append(RenderedContent(channel, message, plugin(channel).summary(message)))
    return rendered


def send_step(scenario: Scenario, step_id: str) -> SendStep:
    """The send step `step_id` of `scenario`; ValueError naming its send steps when there is no such
    step or it sends nothing."""
    return _send_step(scenario, step_id)


def _send_context(scenario: Scenario, step: SendStep, profile: Profile, key: str) -> SendContext:
    return SendContext(
        key=key,
        customer_id=profile.customer_id,
        scenario_id=scenario.id,
        version=scenario.version,
        step_id=step.id,
        track_clicks=scenario.tracking.clicks,
        track_opens=scenario.tracking.opens,
    )


def _send_step(scenario: Scenario, step_id: str) -> SendStep:
    sends = [s.id for s in scenario.steps if isinstance(s, SendStep)]
    listed = ", ".join(sends) or "none"
    try:
        step = scenario.step(step_id)
    except KeyError:
        raise ValueError(
            f"scenario {scenario.id} has no step {step_id!r}; its send steps: {listed}"
        ) from None
    if not isinstance(step, SendStep):
        raise ValueError(f"step {step_id} is a {step.type} step, not a send step; send steps: {listed}")
    return step


def _render_failure(step_id: str, exc: RenderError, event: StoredEvent | None) -> str:
    problems = "; ".join(str(p) for p in exc.problems)
    message = f"step {step_id} cannot be rendered with this profile: {problems}"
    if event is None and "event." in problems:
        message += " (the step uses the trigger event: give one with --event-file)"
    return message


def _errors(exc: ValidationError) -> str:
    # Field paths and pydantic's reasons only: the input (content, an address) is not repeated.
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)[:500]


def _preview(
    scenario: Scenario, step: SendStep, profile: Profile, key: str, channel: Channel, message: Any
) -> str:
    """The simulator's one-line summary of the content (first LINE text, or the subject)."""
    shown = Dispatch(
        key=key,
        channel=channel,
        customer_id=profile.customer_id,
        scenario_id=scenario.id,
        version=scenario.version,
        step_id=step.id,
        entry=0,
        messages={channel: message},
    )
    return summary(shown)


def describe(send: PreparedSend) -> Mapping[str, str]:
    """What the CLI prints: no recipient, no content beyond the preview; for a channel whose test is
    looked at where it shows (web), the link that shows it."""
    described = {"step": send.step_id, "channel": send.channel, "key": send.key, "preview": send.preview}
    link = plugin(send.channel).test_link(send.dispatch)
    return described if link is None else {**described, "link": link}
