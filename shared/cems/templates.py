"""Message content as Liquid templates (python-liquid 2), rendered all-or-nothing.

In scope: `profile` (traits, purchase facts, ids), `event` (the trigger event: `event.properties`,
`event.event`, `event.timestamp`), `step` (`id`, `name`, `type`) and `scenario` (`id`, `name`,
`version`). Dates are datetimes in the scenario's time zone (use the `date` filter), amounts are
numbers. Survey answers are traits with a dot in their name: `profile.traits["survey.taste"]`.

A value that is missing (or null) fails the render with a reason naming it, unless a `default`
filter supplies one (`{{ profile.traits.last_name | default: "お客様" }}`); `{% if %}` may test a
missing value (it is false). Nothing half-rendered is ever returned: every string of a message is
rendered first, and any failure raises `RenderError` listing each one. HTML email bodies are
rendered with autoescaping, so a trait cannot inject markup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from liquid import BoundTemplate, Environment, FalsyStrictUndefined
from liquid.exceptions import LiquidError

if TYPE_CHECKING:
    from cems.models import Profile, StoredEvent

SCOPE_NAMES = ("profile", "event", "step", "scenario")
TEMPLATE_CACHE_SIZE = 4096


class _Missing(FalsyStrictUndefined):
    """Fails on output, loops and filters, but is false in `{% if %}` and gives way to `default`."""

    force_liquid_default = True


_TEXT = Environment(undefined=_Missing, strict_filters=True)
_HTML = Environment(undefined=_Missing, strict_filters=True, autoescape=True)


@dataclass(frozen=True)
class RenderProblem:
    where: str  # e.g. "[0].text", "subject"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


class RenderError(Exception):
    """Content that could not be rendered whole; `problems` says where and why."""

    def __init__(self, problems: list[RenderProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str | None
    text: str | None


def _message(exc: LiquidError) -> str:
    return str(getattr(exc, "message", None) or str(exc).splitlines()[0])


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def parse(source: str, html: bool = False) -> BoundTemplate:
    """The parsed template (cached: each distinct text is parsed once per process)."""
    return (_HTML if html else _TEXT).from_string(source)


def template_problems(source: str, html: bool = False) -> list[str]:
    """Why a template cannot be used, in plain words, Japanese first with English alongside (the
    scenario validator shows them to marketers): syntax, an unknown filter, or a variable that is not
    in scope (a typo of `profile`, say). Empty when it is fine."""
    try:
        template = parse(source, html)
    except LiquidError as exc:
        return [f"Liquid の構文エラー: {_message(exc)} / Liquid syntax: {_message(exc)}"]
    problems: list[str] = []
    env = _HTML if html else _TEXT
    try:
        unknown_filters = sorted(set(template.filter_names()) - set(env.filters))
        unknown_names = sorted(set(template.global_variables()) - set(SCOPE_NAMES))
    except LiquidError as exc:  # pragma: no cover - analysis of a template that parsed
        return [f"Liquid のエラー: {_message(exc)} / Liquid: {_message(exc)}"]
    scope = ", ".join(SCOPE_NAMES)
    problems += [
        f"Liquid のフィルター `{name}` はありません / unknown Liquid filter `{name}`"
        for name in unknown_filters
    ]
    problems += [
        f"`{name}` はテンプレートで使えません（使えるのは {scope}） / `{name}` is not in scope; "
        f"templates can use {scope}"
        for name in unknown_names
    ]
    return problems


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def render(source: str, scope: Mapping[str, Any], html: bool = False) -> str:
    """Render one template; raises RenderError (a single problem) naming what is missing."""
    if not is_template(source):
        return source
    try:
        return parse(source, html).render(**scope)
    except LiquidError as exc:
        reason = _message(exc)
        if "is undefined" in reason:
            name = reason.replace(" is undefined", "").strip("'")
            reason = f'no value for {name} (give one with a default filter: {{{{ {name} | default: "…" }}}})'
        raise RenderError([RenderProblem("", reason)]) from None


def render_strings(value: Any, scope: Mapping[str, Any], where: str = "") -> Any:
    """`value` with every string inside it rendered (keys are left alone)."""
    problems: list[RenderProblem] = []
    result = _render_tree(value, scope, where, problems)
    if problems:
        raise RenderError(problems)
    return result


def _render_tree(value: Any, scope: Mapping[str, Any], where: str, problems: list[RenderProblem]) -> Any:
    if isinstance(value, str):
        try:
            return render(value, scope)
        except RenderError as exc:
            problems.extend(RenderProblem(where, p.reason) for p in exc.problems)
            return value
    if isinstance(value, dict):
        return {k: _render_tree(v, scope, f"{where}.{k}" if where else k, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_tree(v, scope, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return value


def render_line_messages(messages: list[dict[str, Any]], scope: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every string of every LINE message rendered, then each message checked again by the SDK and
    LINE's limits (a rendered text can outgrow 5,000 characters). All or nothing."""
    from cems.line.dispatch import validate_line_message

    rendered = render_strings(messages, scope)
    problems: list[RenderProblem] = []
    checked: list[dict[str, Any]] = []
    for i, message in enumerate(rendered):
        try:
            checked.append(validate_line_message(message))
        except ValueError as exc:
            problems.append(RenderProblem(f"[{i}]", f"after rendering, {exc}"))
    if problems:
        raise RenderError(problems)
    return checked


def render_email(subject: str, html: str | None, text: str | None, scope: Mapping[str, Any]) -> RenderedEmail:
    """The email's parts rendered (HTML with autoescaping). All or nothing."""
    problems: list[RenderProblem] = []
    out: dict[str, str | None] = {}
    for name, source, as_html in (("subject", subject, False), ("html", html, True), ("text", text, False)):
        if source is None:
            out[name] = None
            continue
        try:
            out[name] = render(source, scope, html=as_html)
        except RenderError as exc:
            problems.extend(RenderProblem(name, p.reason) for p in exc.problems)
    if problems:
        raise RenderError(problems)
    rendered_subject = out["subject"] or ""
    if "\n" in rendered_subject or "\r" in rendered_subject:
        raise RenderError([RenderProblem("subject", "the rendered subject has a line break")])
    return RenderedEmail(subject=rendered_subject, html=out["html"], text=out["text"])


def template_scope(
    profile: Profile | None = None,
    event: StoredEvent | None = None,
    step: Mapping[str, Any] | None = None,
    scenario: Mapping[str, Any] | None = None,
    time_zone: str = "Asia/Tokyo",
) -> dict[str, Any]:
    """What templates see. Nulls are left out (so they count as missing), sets become sorted
    lists, amounts numbers, datetimes local to `time_zone`."""
    zone = ZoneInfo(time_zone)
    return {
        "profile": _plain(profile.model_dump() if profile is not None else {}, zone),
        "event": _plain(event.model_dump() if event is not None else {}, zone),
        "step": _plain(dict(step or {}), zone),
        "scenario": _plain(dict(scenario or {}), zone),
    }


def _plain(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, dict):
        return {
            str(k.value if isinstance(k, Enum) else k): _plain(v, zone)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list | tuple):
        return [_plain(v, zone) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_plain(v, zone) for v in value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return value.astimezone(zone) if value.tzinfo is not None else value
    if isinstance(value, Enum):
        return value.value
    return value
