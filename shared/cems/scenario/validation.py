"""Checking a scenario file and reporting every mistake at its JSON path, in plain words.

`validate_file(path)` / `validate_document(data)` return a `ValidationReport`: errors (the file is
refused) and warnings (it is accepted, but probably not what was meant), each with a JSON path such
as `steps[2].duration`, a plain-words message and a short code. pydantic's messages are rewritten
(an unknown field gets "did you mean …"), and the checks that need the whole scenario run after the
fields are valid: step references, reachability, loops, Liquid templates, LINE messages.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from cems.line.dispatch import MAX_MESSAGES_PER_REQUEST, MAX_TEXT_LENGTH
from cems.scenario.model import (
    STRUCTURE_ONLY,
    BroadcastTrigger,
    DateTrigger,
    Path,
    Problem,
    Scenario,
    SendStep,
    SetTraitStep,
    format_path,
    semantic_problems,
)
from cems.templates import is_template, template_problems

SURVEY_DATA = re.compile(r"^survey=([^&]*)&answer=(.*)$", re.DOTALL)
SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
MAX_POSTBACK_DATA = 300


@dataclass(frozen=True)
class Issue:
    path: str
    message: str
    code: str
    step: str | None = None  # the id of the step the path is in, for people reading the report

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "message": self.message, "code": self.code}
        if self.step:
            out["step"] = self.step
        return out

    def line(self) -> str:
        where = f'{self.path} (step "{self.step}")' if self.step else self.path
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    source: str
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    scenario: Scenario | None = None

    @property
    def valid(self) -> bool:
        return not self.errors

    def summary_ja(self) -> str:
        if self.valid:
            extra = f"（注意 {len(self.warnings)} 件）" if self.warnings else ""
            return f"有効なシナリオです{extra}"
        return f"無効なシナリオです：エラー {len(self.errors)} 件。各行のパスの箇所を直してください。"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "valid": self.valid,
            "scenario": None
            if self.scenario is None
            else {
                "id": self.scenario.id,
                "version": self.scenario.version,
                "steps": len(self.scenario.steps),
            },
            "errors": [e.to_dict() for e in self.errors],
            "warnings": [w.to_dict() for w in self.warnings],
            "summary_ja": self.summary_ja(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_text(self) -> str:
        if self.valid:
            assert self.scenario is not None
            head = (
                f"{self.source}: valid: scenario {self.scenario.id} v{self.scenario.version}, "
                f"{len(self.scenario.steps)} steps"
            )
        else:
            head = f"{self.source}: invalid: {len(self.errors)} error(s)"
        lines = [head, self.summary_ja()]
        lines += [f"  error: {e.line()}" for e in self.errors]
        lines += [f"  warning: {w.line()}" for w in self.warnings]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry


def validate_file(path: FilePath | str) -> ValidationReport:
    source = str(path)
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return _refused(source, "file", f"there is no file {source}")
    except (OSError, UnicodeDecodeError) as exc:
        return _refused(source, "file", f"cannot read the file: {exc}")
    return validate_text(text, source)


def validate_text(text: str, source: str = "<scenario>") -> ValidationReport:
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        return _refused(source, "json", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    report = validate_document(data, source)
    for key in dict.fromkeys(duplicates):
        report.errors.insert(
            0,
            Issue(
                "(the whole file)",
                f'the key "{key}" appears twice in one object; the last one would win',
                "duplicate_key",
            ),
        )
    if duplicates:
        report.scenario = None
    return report


def validate_document(data: Any, source: str = "<scenario>") -> ValidationReport:
    """Every error and warning of a parsed JSON document."""
    report = ValidationReport(source)
    if not isinstance(data, dict):
        report.errors.append(Issue("(the whole file)", "a scenario is a JSON object {…}", "type"))
        return report
    try:
        scenario = Scenario.model_validate(data, context={STRUCTURE_ONLY: True})
    except ValidationError as exc:
        report.errors += _dedupe([_translate(error, data) for error in exc.errors(include_url=False)])
        return report
    report.errors += [_issue(p, data) for p in semantic_problems(scenario)]
    report.warnings += [_issue(p, data) for p in content_warnings(scenario)]
    if not report.errors:
        report.scenario = scenario
    return report


def _refused(source: str, code: str, message: str) -> ValidationReport:
    return ValidationReport(source, errors=[Issue("(the whole file)", message, code)])


def _dedupe(issues: list[Issue]) -> list[Issue]:
    return list({(i.path, i.message): i for i in issues}.values())


def _issue(problem: Problem, data: dict[str, Any]) -> Issue:
    return Issue(format_path(problem.path), problem.message, problem.code, _step_id(problem.path, data))


def _step_id(path: Path, data: dict[str, Any]) -> str | None:
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps")
        if isinstance(steps, list) and path[1] < len(steps) and isinstance(steps[path[1]], dict):
            step_id = steps[path[1]].get("id")
            return step_id if isinstance(step_id, str) else None
    return None


# ------------------------------------------------------------------------------- pydantic, in plain words


def _translate(error: Any, data: dict[str, Any]) -> Issue:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    path = _json_path(loc, data)
    field_name = path[-1] if path and isinstance(path[-1], str) else None
    message: str
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc)
        message = f"unknown field `{field_name}`"
        if allowed:
            close = difflib.get_close_matches(str(field_name), allowed, n=1, cutoff=0.6)
            message += f"; did you mean `{close[0]}`?" if close else f"; fields here: {', '.join(allowed)}"
    elif kind == "missing":
        message = f"`{field_name}` is required here"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_field = str(ctx.get("discriminator", "type")).strip("'\"")
        path = (*path, tag_field)
        expected = _quoted(str(ctx.get("expected_tags", ""))) or _union_tags(loc)
        if kind == "union_tag_not_found":
            message = f"`{tag_field}` is required: one of {', '.join(expected)}"
        else:
            message = f'"{ctx.get("tag")}" is not a {tag_field} CEMS knows; use one of {", ".join(expected)}'
            message += _did_you_mean(str(ctx.get("tag")), expected)
    elif kind in ("literal_error", "enum"):
        expected = _quoted(str(ctx.get("expected", "")))
        message = f"{_show(value)} is not allowed here; use one of {', '.join(expected)}"
        message += _did_you_mean(str(value), expected)
    elif kind in ("value_error", "assertion_error"):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        message = _PLAIN.get(kind, "{msg}").format(
            value=_show(value), msg=error["msg"], **{k: _show_ctx(v) for k, v in ctx.items()}
        )
    return Issue(format_path(path), message, kind, _step_id(path, data))


_PLAIN = {
    "string_type": "{value} must be text (a JSON string in quotes)",
    "int_type": "{value} must be a whole number",
    "int_from_float": "{value} must be a whole number",
    "float_type": "{value} must be a number",
    "bool_type": "{value} must be true or false (without quotes)",
    "list_type": "{value} must be a list [ … ]",
    "dict_type": "{value} must be an object {{ … }}",
    "model_type": "must be an object {{ … }}, not {value}",
    "model_attributes_type": "must be an object {{ … }}, not {value}",
    "none_required": "must be null",
    "greater_than_equal": "{value} is too small: the least allowed is {ge}",
    "greater_than": "{value} is too small: it must be more than {gt}",
    "less_than_equal": "{value} is too large: the most allowed is {le}",
    "less_than": "{value} is too large: it must be less than {lt}",
    "too_short": "needs at least {min_length} item(s) (has {actual_length})",
    "too_long": "allows at most {max_length} item(s) (has {actual_length})",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long: at most {max_length} characters",
    "string_pattern_mismatch": "{value} does not have the expected form (pattern {pattern})",
    "datetime_type": '{value} must be a date and time, e.g. "2026-05-01T10:00:00+09:00"',
}


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, dict) else "an object"
    if isinstance(value, list):
        text = "a list"
    return text if len(text) <= 60 else text[:57] + "…"


def _show_ctx(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _did_you_mean(value: str, options: list[str]) -> str:
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _json_path(loc: tuple[str | int, ...], data: Any) -> Path:
    """pydantic's location -> the path in the document: union tags (`wait`) and member names
    (`function-after[…]`) that are not keys of the document are left out."""
    path: list[str | int] = []
    current: Any = data
    last = len(loc) - 1
    for i, part in enumerate(loc):
        in_list = isinstance(part, int) and isinstance(current, list) and part < len(current)
        in_object = isinstance(part, str) and isinstance(current, dict) and part in current
        if (
            isinstance(part, str)
            and _is_tag(part, current)
            and not (in_object and i > 0 and loc[i - 1] == part)
        ):
            # pydantic names the member of a discriminated union by its tag, before that member's
            # fields; a field may share the tag's name (`{"kind": "trait", "trait": …}`).
            continue
        if in_list or in_object:
            path.append(part)
            current = current[part]
        elif i == last and isinstance(part, str) and not _is_tag(part, current):
            path.append(part)  # a missing or unknown field
        elif isinstance(part, str) and (_is_tag(part, current) or "[" in part or part in _TYPE_NAMES):
            continue
        else:
            path.append(part)
            current = None
    return tuple(path)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "datetime", "timedelta", "time"}


def _is_tag(part: str, current: Any) -> bool:
    return isinstance(current, dict) and part in (current.get("type"), current.get("kind"))


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType)


def _tag_of(model: type[BaseModel]) -> set[str]:
    for name in ("type", "kind"):
        info = model.model_fields.get(name)
        if info is not None and get_origin(info.annotation) is Literal:
            return {str(a) for a in get_args(info.annotation)}
    return set()


def _allowed_fields(loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the object at `loc[:-1]`, walking the models (for "did you mean")."""
    tp = _unwrap(_type_at(loc[:-1]))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _union_tags(loc: tuple[str | int, ...]) -> list[str]:
    """The tags a discriminated union at `loc` accepts."""
    tp = _unwrap(_type_at(loc))
    if not _is_union(tp):
        return []
    return sorted(
        {t for m in get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel) for t in _tag_of(m)}
    )


def _type_at(loc: tuple[str | int, ...]) -> Any:
    """The annotation at a pydantic location, walking the models from Scenario (None if lost)."""
    tp: Any = Scenario
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part)) or next(
                (f for f in tp.model_fields.values() if f.alias == part), None
            )
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif _is_union(tp):
            members = [m for m in get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = next((m for m in members if str(part) in _tag_of(m)), None)
            if tp is None:
                return None
        else:
            return None
    return tp


# ---------------------------------------------------------------------------------------- content checks


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _postbacks(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict):
        if value.get("type") == "postback" and "data" in value:
            yield (*path, "data"), value["data"]
        for key, item in value.items():
            yield from _postbacks(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _postbacks(item, (*path, i))


def content_problems(scenario: Scenario) -> list[Problem]:
    """LINE messages (count, the SDK's own check, text length, survey postbacks), email parts and
    trait values: each Liquid template must parse and use only what is in scope."""
    problems: list[Problem] = []
    for i, step in enumerate(scenario.steps):
        base: Path = ("steps", i)
        if isinstance(step, SendStep) and step.line is not None:
            if not step.line:
                problems.append(Problem((*base, "line"), "give at least one LINE message", "line_message"))
            if len(step.line) > MAX_MESSAGES_PER_REQUEST:
                problems.append(
                    Problem(
                        (*base, "line"),
                        f"{len(step.line)} LINE messages; LINE sends at most "
                        f"{MAX_MESSAGES_PER_REQUEST} at a time",
                        "too_many_line_messages",
                    )
                )
            for j, message in enumerate(step.line):
                where: Path = (*base, "line", j)
                text = message.get("text") if isinstance(message, dict) else None
                if isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
                    problems.append(
                        Problem(
                            (*where, "text"),
                            f"the text is {len(text):,} characters; LINE accepts at most {MAX_TEXT_LENGTH:,}",
                            "line_text_too_long",
                        )
                    )
                else:
                    problems += line_message_problems(message, where)
                problems += _template_problems(message, where)
                for data_path, data in _postbacks(message, where):
                    problems += _survey_postback_problems(data_path, data)
        if isinstance(step, SendStep) and step.email is not None:
            for part in ("subject", "html", "text"):
                source = getattr(step.email, part)
                if source is not None:
                    problems += [
                        Problem((*base, "email", part), p, "liquid")
                        for p in template_problems(source, html=part == "html")
                    ]
        if isinstance(step, SetTraitStep):
            problems += _template_problems(step.value, (*base, "value"))
    return problems


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


def line_message_problems(message: Any, where: Path) -> list[Problem]:
    """One LINE message object, checked with line-bot-sdk's own model (as the sender does) and a
    few of LINE's limits the SDK does not check; each problem at its path inside the message."""
    from cems.line.dispatch import validate_line_message

    if not isinstance(message, dict):
        return [Problem(where, "a LINE message is an object {…} with a `type`", "line_message")]
    kind = message.get("type")
    if not isinstance(kind, str):
        return [
            Problem(
                (*where, "type"),
                f"`type` is required: one of {', '.join(LINE_MESSAGE_TYPES)}",
                "line_message",
            )
        ]
    if kind not in LINE_MESSAGE_TYPES:
        return [
            Problem(
                (*where, "type"),
                f'"{kind}" is not a LINE message type; use one of {", ".join(LINE_MESSAGE_TYPES)}'
                + _did_you_mean(kind, list(LINE_MESSAGE_TYPES)),
                "line_message",
            )
        ]
    problems = _sdk_problems(message, where)
    if not problems:
        try:
            validate_line_message(message)
        except ValueError as exc:
            problems.append(Problem(where, str(exc), "line_message"))
    alt_text = message.get("altText")
    if isinstance(alt_text, str) and len(alt_text) > MAX_ALT_TEXT:
        problems.append(
            Problem(
                (*where, "altText"),
                f"altText is {len(alt_text)} characters; LINE accepts at most {MAX_ALT_TEXT}",
                "line_message",
            )
        )
    quick_reply = message.get("quickReply")
    items = quick_reply.get("items") if isinstance(quick_reply, dict) else None
    if isinstance(items, list) and len(items) > MAX_QUICK_REPLY_ITEMS:
        problems.append(
            Problem(
                (*where, "quickReply", "items"),
                f"{len(items)} quick reply buttons; LINE shows at most {MAX_QUICK_REPLY_ITEMS}",
                "line_message",
            )
        )
    for path, action in _actions(message, where):
        label = action.get("label")
        if isinstance(label, str) and len(label) > MAX_ACTION_LABEL and not is_template(label):
            problems.append(
                Problem(
                    (*path, "label"),
                    f"the label is {len(label)} characters; LINE accepts at most {MAX_ACTION_LABEL}",
                    "line_message",
                )
            )
        if action.get("type") == "postback" and not isinstance(action.get("data"), str):
            problems.append(Problem((*path, "data"), "a postback action needs `data`", "line_message"))
    return problems


def _sdk_problems(message: dict[str, Any], where: Path) -> list[Problem]:
    from cems.line.api import message_from_dict

    try:
        message_from_dict(message)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if not callable(errors):
            return [
                Problem(
                    where,
                    f"LINE's SDK refuses this message: {str(exc).splitlines()[0][:200]}",
                    "line_message",
                )
            ]
        out: list[Problem] = []
        for error in errors():
            loc = tuple(_camel(part) if isinstance(part, str) else part for part in error.get("loc", ()))
            if error.get("type") in ("type_error.none.not_allowed", "value_error.missing"):
                text = f"`{loc[-1]}` is required in a {message['type']} message" if loc else "required"
            else:
                text = str(error.get("msg", "invalid"))
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


def _template_problems(value: Any, path: Path) -> list[Problem]:
    return [
        Problem(p, message, "liquid")
        for p, text in _strings(value, path)
        for message in template_problems(text)
    ]


def _survey_postback_problems(path: Path, data: Any) -> list[Problem]:
    if not isinstance(data, str) or not data.startswith("survey="):
        return []
    match = SURVEY_DATA.match(data)
    if match is None:
        return [
            Problem(path, 'survey postback data is "survey=<question>&answer=<value>"', "survey_postback")
        ]
    if not SURVEY_QUESTION.match(match.group(1)):
        return [
            Problem(
                path,
                f'survey question "{match.group(1)}": use letters, digits, `_`, `.`, `-`, at most 64',
                "survey_postback",
            )
        ]
    if len(data) > MAX_POSTBACK_DATA:
        return [
            Problem(
                path,
                f"postback data is {len(data)} characters; LINE accepts at most {MAX_POSTBACK_DATA}",
                "survey_postback",
            )
        ]
    return []


def content_warnings(scenario: Scenario) -> list[Problem]:
    """Accepted, but probably a mistake: templates that use `event` in a scenario whose trigger
    has no event (a broadcast or a date), which fail unless they have a default."""
    if not isinstance(scenario.trigger, BroadcastTrigger | DateTrigger):
        return []
    from cems.templates import parse

    warnings: list[Problem] = []
    for i, step in enumerate(scenario.steps):
        if not isinstance(step, SendStep):
            continue
        content: dict[str, Any] = {
            "line": step.line or [],
            "email": step.email.model_dump() if step.email else {},
        }
        for path, text in _strings(content, ("steps", i)):
            try:
                names = parse(text).global_variables()
            except Exception:  # noqa: S112 - reported as an error already
                continue
            if "event" in names:
                warnings.append(
                    Problem(
                        path,
                        f"uses `event`, but a {scenario.trigger.type} trigger has no event: "
                        "it renders only with a default filter",
                        "event_without_trigger_event",
                    )
                )
    return warnings
