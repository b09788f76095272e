"""Headless Chromium for the browser tests (tests/browser and tests/e2e share it).

Debian's chromium and chromedriver are used at fixed paths (`make chromium` installs them), so
Selenium Manager is never asked to download anything. A missing browser fails the test run: the
browser tests are part of CI and must not be skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path(os.environ.get("CEMS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CEMS_CHROMEDRIVER", "/usr/bin/chromedriver"))

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def check_installed() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"headless Chromium is needed for the browser tests but {', '.join(missing)} is missing; "
            "run `make chromium` (Debian packages chromium and chromium-driver)"
        )


def new_driver(user_data_dir: Path) -> webdriver.Chrome:
    """A fresh headless Chromium with its own empty profile in user_data_dir."""
    check_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    # Console messages and errors of the page, readable with driver.get_log("browser").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(15)
    return driver


@contextmanager
def chrome_driver() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a throwaway profile, quit and removed afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="cems-chromium-"))
    try:
        driver = new_driver(profile)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
