"""Scenario diagram pages (cems.console.diagram.render_page) in real headless Chromium: each example
is drawn, measured and photographed. The screenshots are kept as test artifacts in
test-artifacts/diagrams/<example>.png for people to look at; the test checks what a machine can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cems.console.diagram import layout, render_page
from cems.scenario.validation import validate_file
from selenium import webdriver

from tests.browser.conftest import TestSite

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.json"))
ARTIFACTS = ROOT / "test-artifacts" / "diagrams"
# A blank or broken page compresses to far less than this; a drawn diagram to far more.
SMALLEST_SCREENSHOT = 2048
# Larger pages are photographed in part: the window cannot grow without bound.
MAX_WINDOW = 4000

browser = pytest.mark.browser

# What the page shows, measured by the browser: the SVG's box, and per diagram box the widest of
# its text lines against the box's own width (the layout sizes boxes from an estimate of the text).
MEASURE = """
const svg = document.querySelector('.diagram svg');
const r = svg.getBoundingClientRect();
const boxes = Array.from(svg.querySelectorAll('g.box')).map(g => {
  const rect = g.querySelector('rect');
  const lines = Array.from(g.querySelectorAll('text.line')).map(t => t.getComputedTextLength());
  return {id: g.dataset.id, width: rect.width.baseVal.value, widest: Math.max(0, ...lines)};
});
return {
  width: r.width, height: r.height,
  pageWidth: document.documentElement.scrollWidth, pageHeight: document.documentElement.scrollHeight,
  boxes: boxes,
};
"""


@browser
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_each_example_page_renders_and_is_photographed(
    example: Path, chrome: webdriver.Chrome, site: TestSite
) -> None:
    report = validate_file(example)
    assert report.scenario is not None and report.valid, report.to_text()
    diagram = layout(report.scenario)
    url = site.add(f"/{example.stem}.html", render_page(diagram, report.scenario.name))

    chrome.get(url)
    measured: dict[str, Any] = chrome.execute_script(MEASURE)
    # The whole page in the window, so the screenshot shows the whole diagram.
    chrome.set_window_size(
        min(MAX_WINDOW, int(measured["pageWidth"]) + 40), min(MAX_WINDOW, int(measured["pageHeight"]) + 140)
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{example.stem}.png"
    screenshot.unlink(missing_ok=True)
    assert chrome.save_screenshot(str(screenshot))

    assert screenshot.is_file()
    assert screenshot.stat().st_size > SMALLEST_SCREENSHOT
    assert measured["width"] == pytest.approx(diagram.width, abs=1)
    assert measured["height"] == pytest.approx(diagram.height, abs=1)
    drawn = {box["id"] for box in measured["boxes"]}
    assert {step.id for step in report.scenario.steps} <= drawn
    for box in measured["boxes"]:
        assert box["widest"] > 0, f"box {box['id']} shows no text"
        assert box["widest"] <= box["width"], f"the text of box {box['id']} is wider than the box"
