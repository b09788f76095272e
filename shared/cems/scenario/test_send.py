"""A test send (`cems scenario test-send`): one step of a scenario file, rendered with a sample or
given profile, as a dispatch for ONE staff recipient, marked as a test.

The step is rendered exactly as the engine renders it (`engine.step_scope` and
`engine.render_step_line` / `engine.render_step_email`), so what the staff member receives is what a
customer with that profile would. The dispatch is a normal `LineDispatch` or `EmailDispatch` with
`test=True`: the senders send it to the given LINE user id (`test_line_user_id`) or address
(`to_address`) only, never to the customer whose profile was used, and count nothing in the reports
(tracking tokens of a test mail say `test`, so clicks, opens and unsubscribes change nothing).
Every test send has a new idempotency key, `test#<scenario>#<step>#<uuid4>`: sending the same step
again sends again.

Nothing here touches AWS; the CLI reads the profile and enqueues the dispatch.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError

from cems import clock
from cems.email.dispatch import EmailDispatch
from cems.line.dispatch import LineDispatch
from cems.models import Profile, StoredEvent
from cems.scenario.engine import (
    Dispatch,
    EmailMessage,
    render_step_email,
    render_step_line,
    step_scope,
)
from cems.scenario.model import Scenario, SendStep
from cems.scenario.simulate import default_profile, events_from, profile_from, summary
from cems.templates import RenderError

# The customer id of the sample profile (no such customer exists; nothing is written about it).
TEST_CUSTOMER = "cus_test"
KEY_PREFIX = "test"
MAX_KEY_LENGTH = 256  # LineDispatch / EmailDispatch idempotency_key
_LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")
RECIPIENT_HELP = "--to takes line:<LINE user id> (U and 32 hex digits) or email:<address>"

Channel = Literal["line", "email"]


@dataclass(frozen=True)
class Recipient:
    """Where the test goes: a LINE user id or an email address (never printed or logged)."""

    channel: Channel
    address: str

    def __repr__(self) -> str:  # keeps the id or address out of tracebacks and debug output
        return f"Recipient(channel={self.channel!r})"


@dataclass(frozen=True)
class PreparedSend:
    """What to enqueue: the dispatch (its SQS body) on LineSendQueue or EmailSendQueue."""

    channel: Channel
    step_id: str
    key: str
    dispatch: LineDispatch | EmailDispatch
    # A short line of the content: the first LINE message's text, or the email's subject.
    preview: str

    def body(self) -> str:
        return self.dispatch.to_sqs_body()


def parse_recipient(spec: str) -> Recipient:
    """`line:<userId>` or `email:<address>`; ValueError (without the value) when malformed."""
    from cems.email.sender import valid_address

    kind, sep, value = spec.strip().partition(":")
    value = value.strip()
    if not sep or kind not in ("line", "email") or not value:
        raise ValueError(RECIPIENT_HELP)
    if kind == "line":
        if not _LINE_USER_ID.fullmatch(value):
            raise ValueError("line: needs a LINE user id: U and 32 hex digits (0-9, a-f)")
        return Recipient("line", value)
    if not valid_address(value):
        raise ValueError("email: needs an address such as staff@shop.example.jp (ASCII only)")
    return Recipient("email", value)


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
    if to.channel == "line" and step.channel == "email":
        raise ValueError(f"step {step_id} sends by email only; give --to email:<address>")
    if to.channel == "email" and step.channel == "line":
        raise ValueError(f"step {step_id} sends on LINE only; give --to line:<LINE user id>")
    who = profile or sample_profile()
    scope = step_scope(scenario, scenario.version, step, who, event)
    key = fresh_key(scenario.id, step.id)
    try:
        if to.channel == "line":
            line = LineDispatch(
                idempotency_key=key,
                recipients=[who.customer_id],
                messages=render_step_line(step, scope),
                scenario_id=scenario.id,
                version=scenario.version,
                step_id=step.id,
                test=True,
                test_line_user_id=to.address,
                notification_disabled=step.notification_disabled,
            )
            preview = _preview(scenario, step, who, key, line=line)
            return PreparedSend("line", step.id, key, line, preview)
        content = render_step_email(step, scope)
        email = EmailDispatch(
            idempotency_key=key,
            customer_id=who.customer_id,
            subject=content.subject,
            html=content.html,
            text=content.text,
            scenario_id=scenario.id,
            version=scenario.version,
            step_id=step.id,
            track_clicks=scenario.tracking.clicks,
            track_opens=scenario.tracking.opens,
            test=True,
            to_address=to.address,
        )
    except RenderError as exc:
        raise ValueError(_render_failure(step.id, exc, event)) from None
    except ValidationError as exc:
        raise ValueError(f"step {step.id} cannot be sent after rendering: {_errors(exc)}") from None
    preview = _preview(scenario, step, who, key, email=email)
    return PreparedSend("email", step.id, key, email, preview)


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
    scenario: Scenario,
    step: SendStep,
    profile: Profile,
    key: str,
    *,
    line: LineDispatch | None = None,
    email: EmailDispatch | None = None,
) -> str:
    """The simulator's one-line summary of the content (first LINE text, or the subject)."""
    message = None
    if email is not None:
        message = EmailMessage(subject=email.subject, html=email.html, text=email.text)
    shown = Dispatch(
        key=key,
        channel="line" if line is not None else "email",
        customer_id=profile.customer_id,
        scenario_id=scenario.id,
        version=scenario.version,
        step_id=step.id,
        entry=0,
        line=line,
        email=message,
    )
    return summary(shown)


def describe(send: PreparedSend) -> Mapping[str, str]:
    """What the CLI prints: no recipient, no content beyond the preview."""
    return {"step": send.step_id, "channel": send.channel, "key": send.key, "preview": send.preview}
