"""Debian's headless Chromium under selenium, for tests that look at a page as a person would.

``chromium()`` starts a fresh browser (its own profile in a temporary directory, no network of its
own: no sync, no component updates, no QUIC) and always quits it, then kills by pid anything the
driver left behind. Selenium is given ``/usr/bin/chromedriver`` explicitly, so Selenium Manager is
never run and nothing is downloaded. The binaries come from ``apt-get install chromium
chromium-driver``; without them the test is skipped on a developer machine and fails in CI
(``CI=true``), so a missing install step cannot turn into a green run that tested nothing.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

# Selenium Manager must never be asked to resolve or fetch anything, nor report usage. Set before
# selenium is imported, and inherited by chromedriver.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.helpers import wait_until

CHROMIUM = os.environ.get("SELFHEAL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SELFHEAL_CHROMEDRIVER", "/usr/bin/chromedriver")

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the setuid sandbox is not available
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
)


def require_chromium() -> None:
    """Skip (or fail under CI) when Debian's chromium or chromedriver is not installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if not missing:
        return
    reason = f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(
    width: int = 1280,
    height: int = 1000,
    timeout_s: float = 20.0,
    extra_flags: tuple[str, ...] = (),
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium driver with page-load and script timeouts of ``timeout_s`` seconds.

    Browser console messages are kept (``driver.get_log("browser")``). On exit the driver quits,
    and any chromedriver or chromium process it started that is still alive after 5 s is killed.
    """
    require_chromium()
    with tempfile.TemporaryDirectory(prefix="selfheal-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        for flag in extra_flags:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(
            executable_path=CHROMEDRIVER,
            log_output=subprocess.DEVNULL,
            env={**os.environ, "SE_OFFLINE": "true"},
        )
        driver = webdriver.Chrome(options=options, service=service)
        started = _descendants(service)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.set_script_timeout(timeout_s)
            yield driver
        finally:
            started |= _descendants(service)
            try:
                driver.quit()
            finally:
                _reap(started)


def _descendants(service: Service) -> set[psutil.Process]:
    """chromedriver and every process under it (chromium and its helpers)."""
    process: Any = getattr(service, "process", None)
    if process is None:
        return set()
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(process.pid)
        return {root, *root.children(recursive=True)}
    return set()


def _reap(procs: set[psutil.Process], timeout_s: float = 5.0) -> None:
    """Wait for the given processes to end after quit(); kill by pid whatever did not."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not any(_running(p) for p in procs), timeout_s, what="chromium to exit")
    for proc in procs:
        if _running(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie's parent may be a reaper that is not ours)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The SEVERE browser console messages since the last call (the log is drained on read)."""
    get_log: Any = driver.get_log  # selenium leaves it untyped
    return [entry["message"] for entry in get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: webdriver.Chrome, path: Path, full_page: bool = True) -> Path:
    """Save a PNG of the page; ``full_page`` captures beyond the viewport as well."""
    if not full_page:
        driver.save_screenshot(str(path))
        return path
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
