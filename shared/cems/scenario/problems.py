"""A problem found in a scenario file: where it is (a JSON path) and what is wrong, in Japanese and English.

The checks of the document (cems.scenario.graph, cems.scenario.semantics), the models' own validators
and the report (cems.scenario.validation) all speak in these terms; this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

Path = tuple[str | int, ...]
WHOLE_FILE = "(the whole file)"
# Between the Japanese and the English of one message. Marketers read Japanese first; the English
# stays for developers and for searching the docs.
SEPARATOR = " / "


def bilingual(ja: str, en: str) -> str:
    """One message, Japanese first, English alongside."""
    return f"{ja}{SEPARATOR}{en}"


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str  # bilingual(ja, en)
    code: str = "semantic"


def format_path(path: Path) -> str:
    """('steps', 2, 'next') -> 'steps[2].next'"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or WHOLE_FILE
