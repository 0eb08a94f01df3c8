"""Real-browser fixtures for the web console: the real ``portero serve`` process, headless Chromium.

- ``console_gateway`` (module scope): a gateway with ``[console] enabled = true``, the test child "t",
  approval policies and no ``[telegram]`` section (the console alone approves). The console password
  is set before ``serve`` through ``python -m portero console passwd`` with the password on stdin.
- ``make_driver`` / ``driver`` / ``nojs_driver``: headless Chromium through Debian's chromedriver, each
  with a fresh profile in tmp. ``nojs_driver`` has JavaScript disabled.
- ``shot``: saves a screenshot named after the test and the page into ``$PORTERO_SCREENSHOTS``, else
  ``<repo>/test-artifacts/screenshots/``.

The modules here are skipped (with the reason) when ``/usr/bin/chromium`` or ``/usr/bin/chromedriver``
is absent; ``.ci/run`` installs both, so in CI they run.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, GatewayProcess, child_toml, console_passwd, server_toml
from tests.integration.test_approvals_e2e import POLICIES  # t/delete_thing, t/whoami ask; t/add denied

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "console-pass-0123456789"
WAIT = 20.0  # explicit Selenium waits: generous, never a speed assertion


def browser_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return "headless Chromium not installed (missing " + ", ".join(missing) + "); .ci/run installs it"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (it is in the test extra)"
    return ""


def screenshot_dir() -> Path:
    d = Path(os.environ.get("PORTERO_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


# ------------------------------------------------------------------------------------------ gateway


class ConsoleGateway:
    """The running gateway plus what the tests need to know about it."""

    def __init__(self, tmp: Path, process: GatewayProcess) -> None:
        self.tmp = tmp
        self.process = process
        self.url = process.url
        self.console = process.url + "/console"
        self.db_path = tmp / "data" / "gateway.db"

    def db_rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows from the gateway's real SQLite file, opened read-only."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()


def console_config(tmp: Path, extra: str = "") -> str:
    # --redescribe: the test can change a tool's definition, so the pins page has one to show.
    return (
        server_toml(tmp) + "[console]\nenabled = true\n" + POLICIES + extra + child_toml("t", "--redescribe")
    )


def set_console_password(config_path: Path, password: str) -> None:
    r = console_passwd(config_path, password)
    assert r.returncode == 0, f"console passwd failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert "console password set" in r.stdout, r.stdout + r.stderr


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("console")
    text = console_config(tmp)
    config_path = tmp / "portero.toml"
    config_path.write_text(text)
    set_console_password(config_path, PASSWORD)
    g = GatewayProcess(tmp, text)  # writes the same text to the same file, then serves
    try:
        g.wait_ready()
        yield ConsoleGateway(tmp, g)
    finally:
        g.stop()


# ------------------------------------------------------------------------------------------ browser


def _chrome_options(profile: Path, *, javascript: bool) -> Any:
    from selenium.webdriver.chrome.options import Options

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in (
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
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return opts


@pytest.fixture(scope="module")
def make_driver() -> Iterator[Callable[..., Any]]:
    """A factory of headless Chromium drivers; each one is quit at the end of the module."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []
    profiles: list[tempfile.TemporaryDirectory[str]] = []

    def make(*, javascript: bool = True) -> Any:
        profile = tempfile.TemporaryDirectory(prefix="portero-chromium-")
        profiles.append(profile)
        d = webdriver.Chrome(
            service=Service(str(CHROMEDRIVER)),
            options=_chrome_options(Path(profile.name), javascript=javascript),
        )
        d.set_window_size(1280, 900)
        d.set_page_load_timeout(60)
        drivers.append(d)
        return d

    try:
        yield make
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:  # noqa: BLE001 - a dead browser must not hide the test's own failure
                pass
        for p in profiles:
            p.cleanup()


@pytest.fixture(scope="module")
def driver(make_driver: Callable[..., Any]) -> Any:
    return make_driver()


@pytest.fixture(scope="module")
def nojs_driver(make_driver: Callable[..., Any]) -> Any:
    return make_driver(javascript=False)


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``shot(driver, "page")`` saves ``<module>__<test>__<page>.png`` and returns its path."""
    directory = screenshot_dir()
    module = request.node.module.__name__.rsplit(".", 1)[-1]

    def save(d: Any, page: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}__{request.node.name}__{page}") + ".png"
        path = directory / name
        d.save_screenshot(str(path))
        return path

    return save
