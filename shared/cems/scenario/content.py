"""What a scenario sends, checked on its JSON: content for the step's channel, LINE messages, Liquid.

Like the graph checks (cems.scenario.graph) these read the parsed JSON document, so they run even
when other fields are invalid; a value of the wrong shape is skipped here, because the field
checks report it. Each problem is at its JSON path, in Japanese and English.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

from cems.line.dispatch import MAX_MESSAGES_PER_REQUEST, MAX_TEXT_LENGTH
from cems.scenario.problems import Path, Problem, bilingual
from cems.templates import is_template, template_problems

SURVEY_DATA = re.compile(r"^survey=([^&]*)&answer=(.*)$", re.DOTALL)
SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
MAX_POSTBACK_DATA = 300
LINE_MESSAGE_TYPES = (
    "text",
    "textV2",
    "sticker",
    "image",
    "video",
    "audio",
    "location",
    "imagemap",
    "template",
    "flex",
    "coupon",
)
MAX_QUICK_REPLY_ITEMS = 13
MAX_ACTION_LABEL = 20
MAX_ALT_TEXT = 400
# The content fields a send step's channel needs: (field, the channels that send it, what it is).
_CONTENT = (
    ("line", ("line", "line_or_email"), "`line` の LINE メッセージ", "LINE messages in `line`"),
    ("email", ("email", "line_or_email"), "`email` の本文", "`email` content"),
)
_CHANNELS = ("line", "email", "line_or_email")


def content_problems(document: dict[str, Any]) -> list[Problem]:
    """Every send step's content for its channel: LINE messages (count, the SDK's own check, text
    length, survey postbacks), email parts and set_trait values: each Liquid template must parse and
    use only what is in scope."""
    steps = document.get("steps")
    problems: list[Problem] = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        base: Path = ("steps", i)
        if step.get("type") == "send":
            problems += _channel_problems(step, base)
            if isinstance(step.get("line"), list):
                problems += _line_problems(step["line"], (*base, "line"))
            email = step.get("email")
            for part in ("subject", "html", "text"):
                source = email.get(part) if isinstance(email, dict) else None
                if isinstance(source, str):
                    problems += [
                        Problem((*base, "email", part), p, "liquid")
                        for p in template_problems(source, html=part == "html")
                    ]
        elif step.get("type") == "set_trait" and "value" in step:
            problems += _template_problems(step["value"], (*base, "value"))
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
        content = {"line": step.get("line") or [], "email": step.get("email") or {}}
        for path, text in _strings(content, ("steps", i)):
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


def _channel_problems(step: dict[str, Any], base: Path) -> list[Problem]:
    channel = step.get("channel")
    if channel not in _CHANNELS:
        return []  # the field check names the channel
    problems: list[Problem] = []
    for name, channels, needed_ja, needed_en in _CONTENT:
        value = step.get(name)
        if channel in channels and (value is None or value == []):
            message = bilingual(
                f'チャネル "{channel}" には {needed_ja}が必要です', f'channel "{channel}" needs {needed_en}'
            )
        elif channel not in channels and value is not None:
            message = bilingual(
                f'`{name}` の内容はチャネル "{channel}" では送られません',
                f'`{name}` content is never sent on channel "{channel}"',
            )
        else:
            continue
        problems.append(Problem((*base, name), message, "channel_content"))
    return problems


# ------------------------------------------------------------------------------------------------ LINE


def _line_problems(messages: list[Any], base: Path) -> list[Problem]:
    problems: list[Problem] = []
    if not messages:
        problems.append(
            Problem(
                base,
                bilingual("LINE メッセージを 1 つ以上書いてください", "give at least one LINE message"),
                "line_message",
            )
        )
    if len(messages) > MAX_MESSAGES_PER_REQUEST:
        problems.append(
            Problem(
                base,
                bilingual(
                    f"LINE メッセージが {len(messages)} 件あります。LINE が一度に送れるのは "
                    f"{MAX_MESSAGES_PER_REQUEST} 件までです",
                    f"{len(messages)} LINE messages; LINE sends at most {MAX_MESSAGES_PER_REQUEST} at a time",
                ),
                "too_many_line_messages",
            )
        )
    for j, message in enumerate(messages):
        if not isinstance(message, dict):
            continue  # the field check says a message is an object
        where: Path = (*base, j)
        text = message.get("text")
        if isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
            problems.append(
                Problem(
                    (*where, "text"),
                    bilingual(
                        f"テキストが {len(text):,} 文字あります。LINE が受け付けるのは {MAX_TEXT_LENGTH:,} "
                        "文字までです",
                        f"the text is {len(text):,} characters; LINE accepts at most {MAX_TEXT_LENGTH:,}",
                    ),
                    "line_text_too_long",
                )
            )
        else:
            problems += line_message_problems(message, where)
        problems += _template_problems(message, where)
        for data_path, data in _postbacks(message, where):
            problems += _survey_postback_problems(data_path, data)
    return problems


def line_message_problems(message: Any, where: Path) -> list[Problem]:
    """One LINE message object, checked with line-bot-sdk's own model (as the sender does) and a
    few of LINE's limits the SDK does not check; each problem at its path inside the message."""
    from cems.line.dispatch import validate_line_message

    types = ", ".join(LINE_MESSAGE_TYPES)
    if not isinstance(message, dict):
        return [
            Problem(
                where,
                bilingual(
                    "LINE メッセージは `type` を持つオブジェクト {…} です",
                    "a LINE message is an object {…} with a `type`",
                ),
                "line_message",
            )
        ]
    kind = message.get("type")
    if not isinstance(kind, str):
        return [
            Problem(
                (*where, "type"),
                bilingual(f"`type` が必要です（{types} のいずれか）", f"`type` is required: one of {types}"),
                "line_message",
            )
        ]
    if kind not in LINE_MESSAGE_TYPES:
        close = difflib.get_close_matches(kind, list(LINE_MESSAGE_TYPES), n=1, cutoff=0.6)
        return [
            Problem(
                (*where, "type"),
                bilingual(
                    f'"{kind}" は LINE のメッセージタイプではありません。{types} のいずれかを使ってください'
                    + (f'。"{close[0]}" のことですか？' if close else ""),
                    f'"{kind}" is not a LINE message type; use one of {types}'
                    + (f'; did you mean "{close[0]}"?' if close else ""),
                ),
                "line_message",
            )
        ]
    problems = _sdk_problems(message, where)
    if not problems:
        try:
            validate_line_message(message)
        except ValueError as exc:
            problems.append(
                Problem(
                    where, bilingual(f"LINE が受け付けないメッセージです: {exc}", str(exc)), "line_message"
                )
            )
    alt_text = message.get("altText")
    if isinstance(alt_text, str) and len(alt_text) > MAX_ALT_TEXT:
        problems.append(
            Problem(
                (*where, "altText"),
                bilingual(
                    f"altText が {len(alt_text)} 文字あります。"
                    f"LINE が受け付けるのは {MAX_ALT_TEXT} 文字までです",
                    f"altText is {len(alt_text)} characters; LINE accepts at most {MAX_ALT_TEXT}",
                ),
                "line_message",
            )
        )
    quick_reply = message.get("quickReply")
    items = quick_reply.get("items") if isinstance(quick_reply, dict) else None
    if isinstance(items, list) and len(items) > MAX_QUICK_REPLY_ITEMS:
        problems.append(
            Problem(
                (*where, "quickReply", "items"),
                bilingual(
                    f"クイックリプライのボタンが {len(items)} 個あります。LINE が表示するのは "
                    f"{MAX_QUICK_REPLY_ITEMS} 個までです",
                    f"{len(items)} quick reply buttons; LINE shows at most {MAX_QUICK_REPLY_ITEMS}",
                ),
                "line_message",
            )
        )
    for path, action in _actions(message, where):
        label = action.get("label")
        if isinstance(label, str) and len(label) > MAX_ACTION_LABEL and not is_template(label):
            problems.append(
                Problem(
                    (*path, "label"),
                    bilingual(
                        f"ラベルが {len(label)} 文字あります。"
                        f"LINE が受け付けるのは {MAX_ACTION_LABEL} 文字までです",
                        f"the label is {len(label)} characters; LINE accepts at most {MAX_ACTION_LABEL}",
                    ),
                    "line_message",
                )
            )
        if action.get("type") == "postback" and not isinstance(action.get("data"), str):
            problems.append(
                Problem(
                    (*path, "data"),
                    bilingual("postback アクションには `data` が必要です", "a postback action needs `data`"),
                    "line_message",
                )
            )
    return problems


def _sdk_problems(message: dict[str, Any], where: Path) -> list[Problem]:
    from cems.line.api import message_from_dict

    try:
        message_from_dict(message)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if not callable(errors):
            reason = str(exc).splitlines()[0][:200]
            return [
                Problem(
                    where,
                    bilingual(
                        f"LINE の SDK がこのメッセージを受け付けません: {reason}",
                        f"LINE's SDK refuses this message: {reason}",
                    ),
                    "line_message",
                )
            ]
        out: list[Problem] = []
        for error in errors():
            loc = tuple(_camel(part) if isinstance(part, str) else part for part in error.get("loc", ()))
            if error.get("type") in ("type_error.none.not_allowed", "value_error.missing"):
                field = loc[-1] if loc else "?"
                text = bilingual(
                    f"{message['type']} メッセージには `{field}` が必要です",
                    f"`{field}` is required in a {message['type']} message",
                )
            else:
                reason = str(error.get("msg", "invalid"))
                text = bilingual(f"LINE の SDK が受け付けません: {reason}", reason)
            out.append(Problem((*where, *loc), text, "line_message"))
        return out
    return []


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _actions(value: Any, path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("action", "defaultAction") and isinstance(item, dict):
                yield (*path, key), item
            if key == "actions" and isinstance(item, list):
                yield from (((*path, key, i), a) for i, a in enumerate(item) if isinstance(a, dict))
            yield from _actions(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _actions(item, (*path, i))


def _postbacks(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict):
        if value.get("type") == "postback" and "data" in value:
            yield (*path, "data"), value["data"]
        for key, item in value.items():
            yield from _postbacks(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _postbacks(item, (*path, i))


def _survey_postback_problems(path: Path, data: Any) -> list[Problem]:
    if not isinstance(data, str) or not data.startswith("survey="):
        return []
    match = SURVEY_DATA.match(data)
    if match is None:
        message = bilingual(
            'アンケートの postback データは "survey=<質問>&answer=<回答>" の形です',
            'survey postback data is "survey=<question>&answer=<value>"',
        )
    elif not SURVEY_QUESTION.match(match.group(1)):
        message = bilingual(
            f'アンケートの質問名 "{match.group(1)}": 英数字・`_`・`.`・`-` で 64 文字までにしてください',
            f'survey question "{match.group(1)}": use letters, digits, `_`, `.`, `-`, at most 64',
        )
    elif len(data) > MAX_POSTBACK_DATA:
        message = bilingual(
            f"postback データが {len(data)} 文字あります。"
            f"LINE が受け付けるのは {MAX_POSTBACK_DATA} 文字までです",
            f"postback data is {len(data)} characters; LINE accepts at most {MAX_POSTBACK_DATA}",
        )
    else:
        return []
    return [Problem(path, message, "survey_postback")]


# ---------------------------------------------------------------------------------------------- Liquid


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _template_problems(value: Any, path: Path) -> list[Problem]:
    return [
        Problem(p, message, "liquid")
        for p, text in _strings(value, path)
        for message in template_problems(text)
    ]
