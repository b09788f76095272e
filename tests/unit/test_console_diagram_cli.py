"""`cems scenario diagram FILE [--format svg|html] [--out PATH]` through the real entry point."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cems.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scenarios" / "post_purchase_tea.json"


def test_writes_an_svg_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diagram.svg"

    assert main(["scenario", "diagram", str(EXAMPLE), "--out", str(out)]) == 0

    root = ET.fromstring(out.read_text(encoding="utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("data-scenario") == "post-purchase-yame-gyokuro"
    assert "written to" in capsys.readouterr().err


def test_an_html_name_gets_a_page(tmp_path: Path) -> None:
    out = tmp_path / "diagram.html"

    assert main(["scenario", "diagram", str(EXAMPLE), "--out", str(out)]) == 0

    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert '<html lang="ja">' in page
    assert "八女玉露 ご購入後フォロー" in page


def test_the_format_can_be_chosen_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "diagram", str(EXAMPLE), "--format", "html"]) == 0
    assert capsys.readouterr().out.startswith("<!doctype html>")

    assert main(["scenario", "diagram", str(EXAMPLE), "--format", "svg"]) == 0
    assert capsys.readouterr().out.startswith("<svg ")


def test_an_invalid_file_gets_its_report_and_no_drawing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["steps"][1]["next"] = "nowhere-at-all"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "diagram.svg"

    assert main(["scenario", "diagram", str(broken), "--out", str(out)]) == 1

    printed = capsys.readouterr().out
    assert "invalid" in printed
    assert "nowhere-at-all" in printed
    assert not out.exists()


def test_an_unwritable_output_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no-such-folder" / "diagram.svg"

    assert main(["scenario", "diagram", str(EXAMPLE), "--out", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err
