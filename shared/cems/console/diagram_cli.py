"""`cems scenario diagram FILE`: a scenario file drawn as a flowchart, as SVG or as an HTML page.

The file is validated first, as `cems scenario validate` does: an invalid file gets the same report
and exit 1, and no drawing (a diagram of a scenario CEMS would refuse would mislead).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("svg", "html")


def register(scenario_commands: Any) -> None:
    """Adds `diagram` to the `cems scenario` sub-commands; it sets `handler`."""
    diagram = scenario_commands.add_parser(
        "diagram",
        help="draw a scenario file as a flowchart (SVG or HTML) / シナリオのフローチャート",
    )
    diagram.add_argument("file", type=Path, help="a scenario JSON file")
    diagram.add_argument(
        "--format",
        choices=FORMATS,
        help="svg or html (a standalone page); default: html when --out ends in .html, else svg",
    )
    diagram.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    diagram.set_defaults(handler=diagram_command)


def diagram_command(args: argparse.Namespace) -> int:
    """Exit 0 with the drawing written, 1 for an invalid scenario (its report printed), 2 when the
    output cannot be written."""
    from cems.console.diagram import layout, render_page, render_svg
    from cems.scenario.validation import validate_file

    report = validate_file(args.file)
    if report.scenario is None or not report.valid:
        print(report.to_text())
        return 1
    out: Path | None = args.out
    chosen = args.format or ("html" if out is not None and out.suffix.lower() in (".html", ".htm") else "svg")
    diagram = layout(report.scenario)
    text = render_page(diagram, report.scenario.name) if chosen == "html" else render_svg(diagram)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    print(f"{chosen.upper()} diagram written to {out} / 図を書き出しました", file=sys.stderr)
    return 0
