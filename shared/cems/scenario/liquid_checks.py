"""Liquid checks of any JSON value of a scenario: each string in it must parse and use only what is in
scope, reported at its JSON path (content checks of every channel and set_trait values use them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cems.scenario.problems import Path, Problem
from cems.templates import template_problems


def template_strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """Every string inside `value`, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from template_strings(item, (*path, i))


def liquid_problems(value: Any, path: Path, *, html: bool = False) -> list[Problem]:
    """The Liquid problems of every string inside `value` (`html`: as an HTML part, escaping)."""
    return [
        Problem(p, message, "liquid")
        for p, text in template_strings(value, path)
        for message in template_problems(text, html=html)
    ]
