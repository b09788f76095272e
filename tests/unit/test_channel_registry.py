"""The channel registry: every channel has every plugin part, and the rules that ask it (send steps,
conditions, caps, the dispatch sink) see every registered channel."""

from __future__ import annotations

import ast
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cems import wiring
from cems.channels.plugin import ChannelPlugin, SendContext
from cems.channels.registry import SEND_OPTIONS, channels_of, plugin, plugins, route
from cems.models import Channel, ChannelState, Profile
from cems.scenario.condition_models import ReachableCondition
from cems.scenario.conditions import reachable
from cems.scenario.config import EngineSettings, cap_variable
from cems.scenario.engine import Dispatch, render_step
from cems.scenario.model import ChannelCap, FrequencyCaps, SendStep
from cems.settings import Queues, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 1, 9, tzinfo=UTC)
PLUGINS = [pytest.param(p, id=p.channel.value) for p in plugins()]


def test_every_channel_is_registered_once() -> None:
    assert sorted(p.channel for p in plugins()) == sorted(Channel)
    assert len({p.channel for p in plugins()}) == len(plugins())


@pytest.mark.parametrize("channel_plugin", PLUGINS)
def test_every_registered_channel_has_every_plugin_part(channel_plugin: ChannelPlugin) -> None:
    optional = {"opt_out_event"}  # a channel left only through its channel state has none
    for part in dataclasses.fields(ChannelPlugin):
        value = getattr(channel_plugin, part.name)
        assert part.name in optional or value not in (None, ""), part.name
    assert channel_plugin.reachable(channel_plugin.make_reachable(_profile(line=False, email=False)))
    assert callable(channel_plugin.reachable) and callable(channel_plugin.render)
    assert callable(channel_plugin.queue_body) and callable(channel_plugin.summary)
    assert callable(channel_plugin.test_address) and callable(channel_plugin.test_message)
    assert all(channel_plugin.content_label)
    assert plugin(channel_plugin.channel) is channel_plugin
    assert plugin(channel_plugin.channel.value) is channel_plugin


@pytest.mark.parametrize("channel_plugin", PLUGINS)
def test_every_channel_has_its_queue_setting_sender_function_and_template_block(
    channel_plugin: ChannelPlugin,
) -> None:
    assert channel_plugin.queue in Queues.model_fields
    assert (ROOT / "functions" / channel_plugin.sender / "app.py").is_file()
    assert callable(getattr(wiring, channel_plugin.sender))  # the function's builder
    template = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert f"CodeUri: functions/{channel_plugin.sender}" in template
    assert f"\n  {channel_plugin.queue_resource}:\n" in template
    assert f"\n  {channel_plugin.queue_resource}Url:\n" in template


@pytest.mark.parametrize("channel_plugin", PLUGINS)
def test_every_channel_has_its_content_field_send_option_and_reachable_condition(
    channel_plugin: ChannelPlugin,
) -> None:
    name = channel_plugin.channel.value
    assert name in SendStep.model_fields
    assert channels_of(name) == (channel_plugin.channel,)
    assert ReachableCondition.model_validate({"kind": "reachable", "channel": name}).channel == name
    assert FrequencyCaps().of(channel_plugin.channel) == ChannelCap()


def test_a_send_option_names_only_registered_channels_and_a_step_accepts_each() -> None:
    for option, channels in SEND_OPTIONS.items():
        assert channels and set(channels) <= set(Channel)
        step = {"id": "s", "type": "send", "channel": option}
        for c in channels:
            step |= _CONTENT[c]
        assert SendStep.model_validate(step).channel == option


@pytest.mark.parametrize("channel_plugin", PLUGINS)
def test_a_rendered_step_goes_on_the_queue_as_the_channels_dispatch_model(
    channel_plugin: ChannelPlugin,
) -> None:
    channel = channel_plugin.channel
    step = SendStep.model_validate(
        {
            "id": "hello",
            "type": "send",
            "channel": channel.value,
            **_CONTENT[channel],
        }
    )
    send = SendContext(
        key="cus_1#s#v1#hello#e1", customer_id="cus_1", scenario_id="s", version=1, step_id="hello"
    )
    message = render_step(channel, step, {"profile": {"traits": {"last_name": "山田"}}}, send)
    assert "山田様" in channel_plugin.summary(message)
    dispatch = Dispatch(
        key=send.key,
        channel=channel,
        customer_id="cus_1",
        scenario_id="s",
        version=1,
        step_id="hello",
        entry=1,
        messages={channel: message},
    )
    queued = channel_plugin.dispatch_model.model_validate_json(channel_plugin.queue_body(dispatch, None))
    assert queued.idempotency_key == send.key


_CONTENT: dict[Channel, dict[str, Any]] = {
    Channel.LINE: {"line": [{"type": "text", "text": "{{ profile.traits.last_name }}様"}]},
    Channel.EMAIL: {"email": {"subject": "{{ profile.traits.last_name }}様へ", "text": "本文"}},
    Channel.WEB: {"web": {"kind": "banner", "title": "{{ profile.traits.last_name }}様へ", "body": "本文"}},
}


def _profile(*, line: bool, email: bool) -> Profile:
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    return Profile(
        customer_id="cus_1",
        first_seen_at=NOW,
        updated_at=NOW,
        line_user_id="U" + "0" * 32 if line else None,
        traits={"email": "sato@example.jp"} if email else {},
        channels={
            **({Channel.LINE: state} if line else {}),
            **({Channel.EMAIL: state} if email else {}),
        },
    )


@pytest.mark.parametrize(
    ("line", "email", "expected"),
    [
        (True, True, ("line", "email")),
        (True, False, ("line",)),
        (False, True, ("email",)),
        (False, False, ()),
    ],
)
def test_a_preference_routes_to_the_reachable_channels_in_order(
    line: bool, email: bool, expected: tuple[str, ...]
) -> None:
    profile = _profile(line=line, email=email)
    assert route("line_or_email", profile) == expected
    assert reachable(profile, "any") is bool(expected)
    for channel in Channel:
        assert reachable(profile, channel.value) is (channel in expected)
        assert plugin(channel).reachable(profile) is (channel in expected)


def test_caps_are_a_mapping_keyed_by_channel_that_reads_from_channel_names() -> None:
    caps = FrequencyCaps.model_validate({"email": {"per_day": 2, "per_week": None}})
    assert caps.of(Channel.EMAIL) == ChannelCap(per_day=2, per_week=None)
    assert caps.of(Channel.LINE) == ChannelCap()
    with pytest.raises(ValueError, match="sms"):
        FrequencyCaps.model_validate({"sms": {"per_day": 1}})


def test_the_caps_of_every_registered_channel_are_read_from_its_variables() -> None:
    env = {cap_variable(p.channel, "day"): "2" for p in plugins()}
    env |= {cap_variable(p.channel, "week"): "9" for p in plugins()}
    caps = FrequencyCaps.model_validate(Settings(env).area(EngineSettings).caps())
    assert all(caps.of(p.channel) == ChannelCap(per_day=2, per_week=9) for p in plugins())
    assert cap_variable(Channel.LINE, "day") == "CEMS_CAP_LINE_PER_DAY"
    with pytest.raises(SettingsError, match="CEMS_CAP_EMAIL_PER_WEEK"):
        _ = Settings({"CEMS_CAP_EMAIL_PER_WEEK": "0"}).area(EngineSettings)


# Where a channel may be named (its value "line"/"email", `Channel.LINE`, a preference's name) outside
# the rules that ask the registry, and why. docs/architecture.md ("Adding a channel") lists them.
MAY_NAME_A_CHANNEL = {
    "cems.line": "the LINE channel's own package",
    "cems.email": "the email channel's own package",
    "cems.web": "the web channel's own package",
    "cems.models": "the Channel enum, defined once; a profile's LINE user id, LINE events' source",
    "cems.channels.registry": "the registered plugins, and the scenario files' `line_or_email`",
    "cems.adapters.dynamodb.line_deliveries": "LINE's plan and recipient store, claims via the shared store",
    "cems.adapters.dynamodb.email_deliveries": "email's claim records, via the shared store",
    "cems.adapters.dynamodb.keys": "LINE's and email's claim sort keys from before the shared store",
    "cems.profile_facts": "how events set channel states (follow, unfollow, email_opt_in): ingest's and "
    "simulate's one rule set",
    "cems.consent": "email's double opt-in",
    "cems.engagement": "email's unsubscribe pages and SES events",
    "cems.trust": "`email` as a contact trait, not a channel",
    "cems.identity": "`line` as an identity kind, not a channel",
    "cems.local": "the local stack plays LINE and SES",
    "cems.cli": "the `cems line` command (the local stack's LINE side)",
    "cems.lookups": "`email` as a contact trait, not a channel",
    "cems.masking": "`email` as a contact trait, not a channel",
    "cems.console.customers": "`email` and `line` as kinds of lookup (contact trait, identity), not channels",
    "cems.console.actions": "`email` as a kind of lookup, not a channel",
    "cems.reports.cli": "`--email` as a kind of lookup, not a channel",
}
CHANNEL_WORDS = {*(c.value for c in Channel), *SEND_OPTIONS, "line_then_email"}


def channel_names_in(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) of each channel named in code: a string that is a channel or send option (not a
    docstring), or `Channel.<MEMBER>`."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in CHANNEL_WORDS and id(node) not in docstrings:
            found.append((node.lineno, str(node.value)))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Channel"
        ):
            found.append((node.lineno, f"Channel.{node.attr}"))
    return found


def test_only_a_channels_own_modules_and_the_listed_ones_name_a_channel() -> None:
    offenders = []
    for path in sorted((ROOT / "shared" / "cems").rglob("*.py")):
        parts = path.relative_to(ROOT / "shared").with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if any(module == m or module.startswith(m + ".") for m in MAY_NAME_A_CHANNEL):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{module}:{line} {what}" for line, what in channel_names_in(tree)]
    assert offenders == [], "ask cems.channels.registry instead of naming a channel"


def test_the_channel_name_check_sees_strings_and_members_but_not_docstrings() -> None:
    tree = ast.parse('"""line"""\nx = "email"\ny = Channel.LINE\nz = "line_or_email"\n')
    assert channel_names_in(tree) == [(2, "email"), (3, "Channel.LINE"), (4, "line_or_email")]
