"""Hypothesis fuzzes the web console of ONE real `portero serve` (``[console] enabled``).

What it attacks: every console route (and made-up ones) with any method; path segments, query values
and form fields of any text (odd Unicode, huge numbers, long strings, percent-encoding, the names the
pages use with values they never offer); bodies that are not form-encoded, not UTF-8, or claim another
type; with a good session cookie, none, or a forged one; with the page's own form token (so the handler
itself runs, not only the token check) or without.

What every answer must be: a status below 500, within a deadline. Whatever it sent, a request without a
good session and form token changed nothing (no grant, no pin decided, no approval decided). At the end
the gateway still serves, the console still logs in, and the log holds no traceback of its own.

Logins are fuzzed without a good form token only (a wrong password with one counts towards the login
limiter, which would lock the fuzzer out: tests/integration/test_console_e2e.py checks the limiter).

`PORTERO_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/hostile/test_fuzz_console.py` runs more.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..integration.harness import GatewayProcess, child_toml, console_passwd, server_toml
from .rawhttp import own_tracebacks

EXAMPLES = int(os.environ.get("PORTERO_FUZZ_EXAMPLES", "0") or 0)
PASSWORD = "fuzzing console password"
TIMEOUT = 20.0

FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@dataclass
class Console:
    g: GatewayProcess
    db: Path
    http: httpx.Client

    def login(self) -> None:
        self.http.cookies.clear()
        page = self.http.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token, page.text
        r = self.http.post("/console/login", data={"password": PASSWORD, "csrf": token.group(1)})
        assert r.status_code == 303, r.text

    def form_token(self) -> str:
        page = self.http.get("/console/grants")
        if page.status_code != 200:  # the session ended (a fuzzed logout, say): log in again
            self.login()
            page = self.http.get("/console/grants")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token, page.text
        return token.group(1)

    def counts(self) -> tuple[int, int, int]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            grants = conn.execute("SELECT COUNT(*) FROM grants").fetchone()[0]
            pins = conn.execute("SELECT COUNT(*) FROM pins WHERE decided_by = 'console'").fetchone()[0]
            approvals = conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0]
        finally:
            conn.close()
        return int(grants), int(pins), int(approvals)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("fuzz_console")
    text = (
        server_toml(tmp)
        + '[console]\nenabled = true\n[pins]\nmode = "approve"\n'
        + '[policies.rules]\n"t/delete_thing" = "require-approval"\n'
        + child_toml("t")
    )
    config = tmp / "portero.toml"
    config.write_text(text)
    done = console_passwd(config, PASSWORD)
    assert done.returncode == 0, done.stderr
    g = GatewayProcess(tmp, text)
    try:
        g.wait_ready()
        with httpx.Client(base_url=g.url, timeout=TIMEOUT, headers={"Origin": g.url}) as http:
            c = Console(g, tmp / "data" / "gateway.db", http)
            c.login()
            yield c
    finally:
        g.stop()
        (tmp / "gateway.log").write_text(g.log_text())


ODD = [
    "",
    "\x00",
    "\ud7ff",
    "é",
    "😀",
    "\u2028",
    "A" * 5000,
    "9" * 40,
    "-1",
    "0",
    "%00",
    "%2e%2e",
    "../..",
    "*",
]
texts = st.one_of(st.text(max_size=40), st.sampled_from(ODD))
segments = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s), st.sampled_from(ODD[1:])
)

ROUTES = [
    "/console/",
    "/console/login",
    "/console/logout",
    "/console/approvals",
    "/console/approvals/{}",
    "/console/audit",
    "/console/audit/{}",
    "/console/grants",
    "/console/grants/{}/revoke",
    "/console/pins",
    "/console/clients",
    "/console/static/{}",
    "/console/{}",
    "/console/static/../{}",
]
FIELDS = [
    "csrf", "action", "reason", "pattern", "duration", "client", "key", "password",
    "tool", "decision", "outcome", "since", "until", "before",
]  # fmt: skip
ACTIONS = ["approve", "approve30", "deny", "block", "", "APPROVE", "approve\x00"]
USABLE = ["30m", "1h", "2d", "t/*", "t/echo", "default", "1h", "2026-11-30"]  # values a handler takes


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, str] | bytes, str, str]:
    route = draw(st.sampled_from(ROUTES))
    path = route.format(quote(draw(segments), safe="%.")) if "{}" in route else route
    method = draw(st.sampled_from(["GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE"]))
    params = draw(st.dictionaries(st.sampled_from(FIELDS), texts, max_size=4))
    form: dict[str, str] | bytes
    if draw(st.booleans()):
        values = st.one_of(texts, st.sampled_from(ACTIONS), st.sampled_from(USABLE))
        form = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
    else:
        form = draw(st.binary(max_size=300))
    content_type = draw(
        st.sampled_from(
            ["application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=x",
             "application/json", "text/plain; charset=utf-16", ""]
        )
    )  # fmt: skip
    cookie = draw(st.sampled_from(["good", "good", "none", "forged"]))
    token = draw(st.sampled_from(["page", "none", "forged"]))
    return method, path, params, form, content_type, cookie + "/" + token


def send(
    c: Console, req: tuple[str, str, dict[str, str], dict[str, str] | bytes, str, str]
) -> httpx.Response:
    method, path, params, form, content_type, how = req
    cookie, token = how.split("/")
    if isinstance(form, dict) and token != "none":
        form = {**form, "csrf": c.form_token() if token == "page" else "forged-token"}
        if path.endswith("/logout") or path.endswith("/login"):
            form.pop("csrf")  # see the module docstring (logins), and a logout would end the session
    cookies = None
    if cookie == "none":
        cookies = httpx.Cookies()
    elif cookie == "forged":
        cookies = httpx.Cookies({"portero_console": "forged-session-cookie"})
    headers = {"Content-Type": content_type} if content_type else {}
    content = form if isinstance(form, bytes) else None
    data = form if isinstance(form, dict) else None
    if method in ("GET", "HEAD", "DELETE"):
        content, data = None, None
    client = c.http
    if cookies is not None:
        client = httpx.Client(base_url=c.g.url, timeout=TIMEOUT, headers={"Origin": c.g.url}, cookies=cookies)
    try:
        if data is not None:
            # httpx sets its own form Content-Type; keep the fuzzed one only for raw bodies.
            return client.request(method, path, params=params, data=data)
        return client.request(method, path, params=params, content=content, headers=headers)
    finally:
        if client is not c.http:
            client.close()


@FUZZ
@given(req=requests())
def test_fuzzed_console_requests(
    console: Console, req: tuple[str, str, dict[str, str], dict[str, str] | bytes, str, str]
) -> None:
    before = console.counts()
    r = send(console, req)
    assert r.status_code < 500, (req, r.status_code, r.text[:500])
    how = req[5]
    if how.split("/")[0] != "good" or how.split("/")[1] != "page":
        # Without a good session and form token nothing changes.
        assert console.counts() == before, req


def test_the_console_survived(console: Console) -> None:
    """Runs last in this file: the gateway still serves, the console still logs in, no traceback."""
    g = console.g
    assert g.proc.poll() is None, g.log_text()[-3000:]
    console.login()
    assert console.http.get("/console/").status_code == 200
    assert not own_tracebacks(g.lines), "\n---\n".join(own_tracebacks(g.lines))
