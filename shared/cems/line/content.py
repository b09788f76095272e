"""A scenario's LINE content checked on its JSON: message count, line-bot-sdk's own model, LINE's
limits the SDK leaves out, survey postbacks and Liquid; each problem at its JSON path, in Japanese and
English (the LINE channel plugin's content check)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

from cems.line.dispatch import MAX_MESSAGES_PER_REQUEST, MAX_TEXT_LENGTH
from cems.scenario.liquid_checks import liquid_problems as _template_problems
from cems.scenario.problems import Path, Problem, bilingual
from cems.scenario.values import SURVEY_QUESTION
from cems.templates import is_template

SURVEY_DATA = re.compile(r"^survey=([^&]*)&answer=(.*)$", re.DOTALL)
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


def line_content_problems(messages: Any, base: Path) -> list[Problem]:
    """The `line` content of a send step (the field check reports a value that is not a list)."""
    if not isinstance(messages, list):
        return []
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
