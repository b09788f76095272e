"""What a scenario sends, checked on its JSON: content for the step's channel (each channel's plugin
checks its own content: LINE messages in cems.line.content), Liquid.

Like the graph checks (cems.scenario.graph) these read the parsed JSON document, so they run even
when other fields are invalid; a value of the wrong shape is skipped here, because the field
checks report it. Each problem is at its JSON path, in Japanese and English.
"""

from __future__ import annotations

from typing import Any

from cems.channels.registry import BEST, SEND_OPTIONS, option_text, plugins
from cems.scenario.liquid_checks import liquid_problems, template_strings
from cems.scenario.problems import Path, Problem, bilingual


def content_problems(document: dict[str, Any]) -> list[Problem]:
    """Every send step's content for its channel, each content field checked by its channel's plugin
    (LINE messages: count, the SDK's own check, text length, survey postbacks; email parts: Liquid),
    and set_trait values: each Liquid template must parse and use only what is in scope."""
    steps = document.get("steps")
    problems: list[Problem] = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        base: Path = ("steps", i)
        if step.get("type") == "send":
            problems += _channel_problems(step, base)
            for channel in plugins():
                name = channel.channel.value  # a step's content field is named after its channel
                if name in step:
                    problems += channel.content_problems(step[name], (*base, name))
        elif step.get("type") == "set_trait" and "value" in step:
            problems += liquid_problems(step["value"], (*base, "value"))
    return problems


def content_warnings(document: dict[str, Any]) -> list[Problem]:
    """Accepted, but probably a mistake: templates that use `event` in a scenario whose trigger
    has no event (a broadcast or a date), which fail unless they have a default."""
    trigger = document.get("trigger")
    kind = trigger.get("type") if isinstance(trigger, dict) else None
    steps = document.get("steps")
    if kind not in ("broadcast", "date") or not isinstance(steps, list):
        return []
    from cems.templates import parse

    warnings: list[Problem] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or step.get("type") != "send":
            continue
        content = {p.channel.value: step.get(p.channel.value) for p in plugins()}
        for path, text in template_strings(content, ("steps", i)):
            try:
                names = parse(text).global_variables()
            except Exception:  # noqa: S112 - reported as an error already
                continue
            if "event" in names:
                warnings.append(
                    Problem(
                        path,
                        bilingual(
                            f"`event` を使っていますが、{kind} トリガーにはイベントがありません。"
                            "default フィルターがないと表示できません",
                            f"uses `event`, but a {kind} trigger has no event: it renders only with a "
                            "default filter",
                        ),
                        "event_without_trigger_event",
                    )
                )
    return warnings


def _offered(channel: Any) -> tuple[str, ...] | None:
    """The channel names a step's `channel` sends on (None: a value the field check reports)."""
    if isinstance(channel, str):
        return tuple(c.value for c in SEND_OPTIONS[channel]) if channel in SEND_OPTIONS else None
    names = {p.channel.value for p in plugins()}
    if isinstance(channel, list) and channel and all(isinstance(c, str) and c in names for c in channel):
        return tuple(channel)
    return None


def _channel_problems(step: dict[str, Any], base: Path) -> list[Problem]:
    channel = step.get("channel")
    if channel == BEST:
        return _best_problems(step, base)
    offered = _offered(channel)
    if offered is None:
        return []  # the field check names the channel
    shown = option_text(channel if isinstance(channel, str) else list(channel or []))
    problems: list[Problem] = []
    for plugin in plugins():
        name = plugin.channel.value
        needed_ja, needed_en = plugin.content_label
        value = step.get(name)
        sends = name in offered
        if sends and (value is None or value == []):
            message = bilingual(
                f'チャネル "{shown}" には {needed_ja}が必要です', f'channel "{shown}" needs {needed_en}'
            )
        elif not sends and value is not None:
            message = bilingual(
                f'`{name}` の内容はチャネル "{shown}" では送られません',
                f'`{name}` content is never sent on channel "{shown}"',
            )
        else:
            continue
        problems.append(Problem((*base, name), message, "channel_content"))
    return problems


def _best_problems(step: dict[str, Any], base: Path) -> list[Problem]:
    """`best` chooses among the channels the step has content for: it needs two to choose from."""
    given = [p for p in plugins() if step.get(p.channel.value) not in (None, [])]
    if len(given) >= 2:
        return []
    labels_ja = "・".join(p.content_label[0] for p in plugins())
    labels_en = ", ".join(p.content_label[1] for p in plugins())
    message = bilingual(
        f'チャネル "best" は内容のあるチャネルから選びます。'
        f"二つ以上のチャネルの内容（{labels_ja}）が必要です",
        f'channel "best" chooses among the channels the step has content for: give content for two or '
        f"more ({labels_en})",
    )
    return [Problem((*base, "channel"), message, "channel_content")]
