"""Checking a scenario file and reporting every mistake at its JSON path, in Japanese and English.

`validate_file(path)` / `validate_document(data)` return a `ValidationReport`: errors (the file is
refused) and warnings (it is accepted, but probably not what was meant), each with a JSON path such
as `steps[2].duration`, a plain-words message (Japanese first, English alongside) and a short code.
pydantic's messages are rewritten by error type (an unknown field gets "did you mean …"). The checks
that need the whole scenario (cems.scenario.semantics: step references, reachability, loops, Liquid
templates, LINE messages) read the JSON, so they run even when fields are invalid: one report lists
every mistake, not the first batch of them.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from cems.scenario.model import STRUCTURE_ONLY, Scenario
from cems.scenario.problems import WHOLE_FILE, Path, Problem, bilingual, format_path
from cems.scenario.semantics import document_problems, document_warnings
from cems.topics import TOPIC_ID_PATTERN, Topic, deployment_topics

# Any kana or kanji: a message that has none is English only and gets a Japanese half.
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


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
        return _refused(
            source, "file", bilingual(f"ファイル {source} がありません", f"there is no file {source}")
        )
    except (OSError, UnicodeDecodeError) as exc:
        return _refused(
            source, "file", bilingual(f"ファイルを読めません: {exc}", f"cannot read the file: {exc}")
        )
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
        # The whole-document checks walk the raw JSON, so a document deep enough to exhaust Python's
        # recursion there is refused the same way as one the parser could not hold.
        report = validate_document(data, source)
    except RecursionError:
        # A hostile or broken file (`[[[[…`): a refusal naming the limit, never a crash of the
        # loader or a 500 from the audience routes. No traceback kept: a thousand parser frames.
        return _refused(
            source,
            "too_deep",
            bilingual(
                "JSON の入れ子が深すぎます（シナリオに必要な深さを大きく超えています）",
                "the JSON is nested far deeper than any scenario needs",
            ),
        )
    except json.JSONDecodeError as exc:
        return _refused(
            source,
            "json",
            bilingual(
                f"JSON として正しくありません（{exc.lineno} 行 {exc.colno} 列）: {exc.msg}",
                f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            ),
        )
    for key in dict.fromkeys(duplicates):
        report.errors.insert(
            0,
            Issue(
                WHOLE_FILE,
                bilingual(
                    f'キー "{key}" が 1 つのオブジェクトに 2 回あります。後のほうが使われてしまいます',
                    f'the key "{key}" appears twice in one object; the last one would win',
                ),
                "duplicate_key",
            ),
        )
    if duplicates:
        report.scenario = None
    return report


def validate_document(
    data: Any, source: str = "<scenario>", topics: Sequence[Topic] | None = None
) -> ValidationReport:
    """Every error and warning of a parsed JSON document: the fields' errors and the whole-document
    checks together, whether or not the fields are valid. `topics`: those the file may name (None:
    the deployment's, CEMS_TOPICS)."""
    report = ValidationReport(source)
    if not isinstance(data, dict):
        report.errors.append(
            Issue(
                WHOLE_FILE,
                bilingual("シナリオは JSON オブジェクト {…} です", "a scenario is a JSON object {…}"),
                "type",
            )
        )
        return report
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data, context={STRUCTURE_ONLY: True})
    except ValidationError as exc:
        report.errors += [_translate(error, data) for error in exc.errors(include_url=False)]
    report.errors += [_issue(p, data) for p in document_problems(data)]
    report.errors += _topic_errors(data, topics)
    report.errors = _dedupe(report.errors)
    report.warnings += [_issue(p, data) for p in document_warnings(data)]
    if not report.errors:
        report.scenario = scenario
    return report


def _topic_errors(data: dict[str, Any], topics: Sequence[Topic] | None) -> list[Issue]:
    """A topic the deployment does not list. Checked here, where a file is accepted, and not in the
    model: a live scenario stays loadable when an operator later drops its topic from CEMS_TOPICS."""
    topic = data.get("topic")
    if not isinstance(topic, str) or not re.match(TOPIC_ID_PATTERN, topic):
        return []  # absent, or the field check names what is wrong with it
    known = [t.id for t in (deployment_topics() if topics is None else topics)]
    if topic in known:
        return []
    listed = ", ".join(known) or "なし / none"
    message = _with_suggestion(
        f'"{topic}" はこのデプロイのトピックではありません（CEMS_TOPICS: {listed}）',
        f'"{topic}" is not one of this deployment\'s topics (CEMS_TOPICS: {listed})',
        topic,
        known,
    )
    return [Issue("topic", message, "unknown_topic")]


def _refused(source: str, code: str, message: str) -> ValidationReport:
    return ValidationReport(source, errors=[Issue(WHOLE_FILE, message, code)])


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
        ja, en = f"`{field_name}` という項目はありません", f"unknown field `{field_name}`"
        close = difflib.get_close_matches(str(field_name), allowed, n=1, cutoff=0.6)
        if close:
            ja, en = f"{ja}。`{close[0]}` のことですか？", f"{en}; did you mean `{close[0]}`?"
        elif allowed:
            listed = ", ".join(allowed)
            ja, en = f"{ja}。ここで使える項目: {listed}", f"{en}; fields here: {listed}"
        message = bilingual(ja, en)
    elif kind == "missing":
        message = bilingual(f"ここには `{field_name}` が必要です", f"`{field_name}` is required here")
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_field = str(ctx.get("discriminator", "type")).strip("'\"")
        path = (*path, tag_field)
        expected = _quoted(str(ctx.get("expected_tags", ""))) or _union_tags(loc)
        options = ", ".join(expected)
        if kind == "union_tag_not_found":
            message = bilingual(
                f"`{tag_field}` が必要です（{options} のどれか）",
                f"`{tag_field}` is required: one of {options}",
            )
        else:
            tag = str(ctx.get("tag"))
            message = _with_suggestion(
                f'"{tag}" は CEMS が知っている {tag_field} ではありません。'
                f"{options} のどれかを使ってください",
                f'"{tag}" is not a {tag_field} CEMS knows; use one of {options}',
                tag,
                expected,
            )
    elif kind in ("literal_error", "enum"):
        expected = _quoted(str(ctx.get("expected", "")))
        options = ", ".join(expected)
        message = _with_suggestion(
            f"{_show(value)} はここでは使えません。{options} のどれかを使ってください",
            f"{_show(value)} is not allowed here; use one of {options}",
            str(value),
            expected,
        )
    elif kind in ("value_error", "assertion_error"):
        # The models' own validators raise bilingual messages; anything else keeps its English.
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not _JAPANESE.search(message):
            message = bilingual(f"値が正しくありません: {message}", message)
    elif kind in _PLAIN:
        ja, en = _PLAIN[kind]
        fields = {"value": _show(value), **{k: _show_ctx(v) for k, v in ctx.items()}}
        message = bilingual(ja.format(**fields), en.format(**fields))
    else:
        # An error type not translated yet: pydantic's English, with a Japanese half naming the type.
        message = bilingual(f"値が正しくありません（{kind}）: {error['msg']}", str(error["msg"]))
    return Issue(format_path(path), message, kind, _step_id(path, data))


# pydantic's error types in plain words: (Japanese, English) templates over the error's `ctx` and
# the offending `value`.
_PLAIN: dict[str, tuple[str, str]] = {
    "string_type": (
        "{value} はテキスト（引用符で囲んだ JSON の文字列）で書いてください",
        "{value} must be text (a JSON string in quotes)",
    ),
    "int_type": ("{value} は整数で書いてください", "{value} must be a whole number"),
    "int_from_float": ("{value} は整数で書いてください", "{value} must be a whole number"),
    "float_type": ("{value} は数で書いてください", "{value} must be a number"),
    "finite_number": ("{value} は有限の数で書いてください", "{value} must be a finite number"),
    "bool_type": (
        "{value} は true か false（引用符なし）で書いてください",
        "{value} must be true or false (without quotes)",
    ),
    "list_type": ("{value} はリスト [ … ] で書いてください", "{value} must be a list [ … ]"),
    "dict_type": ("{value} はオブジェクト {{ … }} で書いてください", "{value} must be an object {{ … }}"),
    "model_type": (
        "{value} ではなくオブジェクト {{ … }} で書いてください",
        "must be an object {{ … }}, not {value}",
    ),
    "model_attributes_type": (
        "{value} ではなくオブジェクト {{ … }} で書いてください",
        "must be an object {{ … }}, not {value}",
    ),
    "none_required": ("null にしてください", "must be null"),
    "greater_than_equal": (
        "{value} は小さすぎます。{ge} 以上にしてください",
        "{value} is too small: the least allowed is {ge}",
    ),
    "greater_than": (
        "{value} は小さすぎます。{gt} より大きくしてください",
        "{value} is too small: it must be more than {gt}",
    ),
    "less_than_equal": (
        "{value} は大きすぎます。{le} 以下にしてください",
        "{value} is too large: the most allowed is {le}",
    ),
    "less_than": (
        "{value} は大きすぎます。{lt} 未満にしてください",
        "{value} is too large: it must be less than {lt}",
    ),
    "too_short": (
        "{min_length} 個以上必要です（いまは {actual_length} 個）",
        "needs at least {min_length} item(s) (has {actual_length})",
    ),
    "too_long": (
        "{max_length} 個までです（いまは {actual_length} 個）",
        "allows at most {max_length} item(s) (has {actual_length})",
    ),
    "string_too_short": ("空にできません", "must not be empty"),
    "string_too_long": (
        "長すぎます。{max_length} 文字までにしてください",
        "is too long: at most {max_length} characters",
    ),
    "string_pattern_mismatch": (
        "{value} は決められた形になっていません（パターン {pattern}）",
        "{value} does not have the expected form (pattern {pattern})",
    ),
    "datetime_type": (
        '{value} は日時で書いてください（例 "2026-05-01T10:00:00+09:00"）',
        '{value} must be a date and time, e.g. "2026-05-01T10:00:00+09:00"',
    ),
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


def _with_suggestion(ja: str, en: str, value: str, options: list[str]) -> str:
    """The message, plus "did you mean …" when one option is close to what was written."""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    if close:
        ja, en = f'{ja}。"{close[0]}" のことですか？', f'{en}; did you mean "{close[0]}"?'
    return bilingual(ja, en)


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
