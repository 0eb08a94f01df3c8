"""The web console over plain HTTP, end to end: the real ``portero serve``, a real SQLite file, the fake Bot
API for the two-approver tests. (The same pages in a real browser: ``tests/browser``.)

What is checked here is what a browser cannot show well: cookies and headers, refused forms (missing,
forged, replayed), the login limiter and its events, the bearer token never logging in, a password change
ending sessions, the console and Telegram deciding the same approval (first wins, the other is told), and
bad input answered with a 4xx and a readable message.
"""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from portero.front.console.auth import PASSWORD_KEY, hash_password
from portero.store import Store

from .harness import TOKEN as BEARER
from .harness import GatewayProcess, child_toml, console_passwd, server_toml, text_of
from .test_approvals_e2e import (
    ADMIN,
    POLICIES,
    REPLACEMENTS,
    Mcp,
    answer_for,
    approval_id,
    asked,
    db_rows,
    edited,
    launch,
    spawn,
    stop,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN, FakeBotAPI  # noqa: E402

PASSWORD = "a console password 42"
DELETE = "t__delete_thing"

CONSOLE = "[console]\nenabled = true\n"


def config_text(tmp: Path, *, telegram: str = "", console: str = CONSOLE, extra: str = "") -> str:
    return server_toml(tmp) + telegram + console + POLICIES + REPLACEMENTS + extra + child_toml("t")


def set_password(config: Path, password: str) -> subprocess.CompletedProcess[str]:
    return console_passwd(config, password)


def form_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def flash(page: str) -> str:
    found = re.search(r'<p class="flash" role="status">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


class Console:
    """A console user without a browser: an httpx client that keeps the cookie."""

    def __init__(self, url: str) -> None:
        # A browser's Origin on every request (the guard checks it, and a page's Referrer-Policy decides
        # whether Chromium sends it or "null": see tests/browser).
        self.http = httpx.AsyncClient(base_url=url + "/console", timeout=30, headers={"Origin": url})

    async def aclose(self) -> None:
        await self.http.aclose()

    async def login(self, password: str = PASSWORD) -> httpx.Response:
        page = await self.http.get("/login")
        return await self.http.post("/login", data={"password": password, "csrf": form_token(page.text)})

    async def page(self, path: str, **params: Any) -> str:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text[:1000])
        return r.text

    async def submit(self, page_path: str, action: str, data: dict[str, str]) -> httpx.Response:
        """Post a form of the page at ``page_path`` with a fresh token, following the redirect."""
        token = form_token(await self.page(page_path))
        return await self.http.post(action, data={**data, "csrf": token}, follow_redirects=True)


async def start(tmp: Path, text: str, *, password: str | None = PASSWORD) -> GatewayProcess:
    (tmp / "portero.toml").write_text(text)
    if password is not None:
        done = await trio.to_thread.run_sync(set_password, tmp / "portero.toml", password)
        assert done.returncode == 0, done.stderr
        assert "console password set" in done.stdout
    return await launch(tmp, text)


@pytest.fixture
async def gw(tmp_path: Path):
    g = await start(tmp_path, config_text(tmp_path))
    try:
        yield g
    finally:
        await stop(g)


@pytest.fixture
async def web(gw: GatewayProcess):
    c = Console(gw.url)
    try:
        yield c
    finally:
        await c.aclose()


async def pending_ids(web: Console, count: int = 1) -> list[str]:
    """The ids on the approvals page, once ``count`` are there."""
    with trio.fail_after(20):
        while True:
            ids = re.findall(r'id="approval-([^"]+)"', await web.page("/approvals"))
            if len(ids) >= count:
                return ids
            await trio.sleep(0.05)


# --------------------------------------------------------------------------------------------- login


async def test_login_cookie_headers_and_logout(tmp_path: Path, gw: GatewayProcess, web: Console) -> None:
    # Without a session every page sends the browser to the login; the bearer token opens nothing.
    for path in ("/", "/approvals", "/audit", "/grants", "/pins", "/clients"):
        r = await web.http.get(path, headers={"Authorization": f"Bearer {BEARER}"})
        assert (r.status_code, r.headers["location"]) == (303, "/console/login"), path
    r = await web.login()
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("portero_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; under TLS it is set (test_tls_cookie_is_secure)
    r = await web.http.get("/")
    assert r.status_code == 200 and 'data-name="t"' in r.text
    assert re.search(r'<li class="login result-ok">[^<]*: ok from 127.0.0.1</li>', r.text)
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    # The script and the style come from the package itself.
    js = await web.http.get("/static/console.js")
    assert js.status_code == 200 and "X-Console-Partial" in js.text
    assert (await web.http.get("/static/console.css")).status_code == 200
    # Logout ends the session on the server: the old cookie opens nothing any more.
    old = web.http.cookies.get("portero_console")
    r = await web.submit("/", "/logout", {})
    assert "Console password" in r.text
    again = httpx.AsyncClient(base_url=gw.url + "/console", cookies={"portero_console": old or ""})
    async with again:
        assert (await again.get("/")).status_code == 303
    events = db_rows(tmp_path, "SELECT detail FROM events WHERE kind = 'console-login'")
    assert [json.loads(e["detail"])["result"] for e in events] == ["ok"]


async def test_wrong_password_limiter_and_events(tmp_path: Path, gw: GatewayProcess, web: Console) -> None:
    r = await web.login("not the password")
    assert r.status_code == 401 and "Wrong password" in r.text
    assert "set-cookie" not in r.headers or "portero_console=" not in r.headers["set-cookie"]
    # The bearer token never logs in.
    r = await web.login(BEARER)
    assert r.status_code == 401
    for _ in range(3):
        assert (await web.login("guess again")).status_code == 401
    # Five failures from this address: even the right password is refused, without being checked.
    r = await web.login(PASSWORD)
    assert r.status_code == 429 and "Too many wrong passwords" in r.text
    assert (await web.http.get("/")).status_code == 303
    results = [
        (json.loads(e["detail"])["result"], json.loads(e["detail"])["peer"])
        for e in db_rows(tmp_path, "SELECT detail FROM events WHERE kind = 'console-login' ORDER BY id")
    ]
    assert results == [("wrong-password", "127.0.0.1")] * 5 + [("rate-limited", "127.0.0.1")]
    # Nothing secret is logged: neither what was typed nor the token.
    log = "\n".join(gw.lines)
    assert "not the password" not in log and BEARER not in log and PASSWORD not in log
    assert "console: wrong password from 127.0.0.1" in log
    # The overview lists the last logins, the refused ones marked.
    assert (await web.http.get("/")).status_code == 303


async def test_forms_refused_without_token_with_a_forged_one_or_replayed(
    tmp_path: Path, gw: GatewayProcess, web: Console, nursery: trio.Nursery
) -> None:
    # The login form itself needs its token.
    r = await web.http.post("/login", data={"password": PASSWORD})
    assert r.status_code == 403 and "Refused" in r.text
    assert (await web.login()).status_code == 303
    client = await Mcp(gw.url).initialize()
    try:
        later = spawn(nursery, client.call, DELETE, {"what": "x"})
        [aid] = await pending_ids(web)
        page = await web.page("/approvals")
        token = form_token(page)
        # No token, a made-up one: refused, and the call still waits.
        for data in ({"action": "approve"}, {"action": "approve", "csrf": "made-up"}):
            r = await web.http.post(f"/approvals/{aid}", data=data)
            assert r.status_code == 403 and "Refused" in r.text
        assert await pending_ids(web) == [aid]
        # The page's token works once...
        r = await web.http.post(f"/approvals/{aid}", data={"action": "deny", "csrf": token})
        assert r.status_code == 303
        res = await later.wait()
        assert res["isError"] is True and "denied by the admin" in text_of(res)
        # ...and the same form sent again is refused (it would have approved the next call otherwise).
        r = await web.http.post(f"/approvals/{aid}", data={"action": "approve", "csrf": token})
        assert r.status_code == 403 and "Refused" in r.text
        r = await web.http.post("/grants", data={"pattern": "t/*", "duration": "1h", "csrf": token})
        assert r.status_code == 403
        assert db_rows(tmp_path, "SELECT * FROM grants") == []
    finally:
        await client.aclose()
    # A body over the limit is a 413, not a 500.
    token = form_token(await web.page("/grants"))
    r = await web.http.post("/grants", data={"pattern": "x" * 100_000, "duration": "1h", "csrf": token})
    assert r.status_code == 413


async def test_password_change_ends_sessions_and_token_hash_never_logs_in(tmp_path: Path) -> None:
    g = await start(tmp_path, config_text(tmp_path))
    web = Console(g.url)
    try:
        assert (await web.login()).status_code == 303
        assert (await web.http.get("/")).status_code == 200
        # A password equal to the bearer token is refused by passwd...
        done = await trio.to_thread.run_sync(set_password, tmp_path / "portero.toml", BEARER)
        assert done.returncode == 1 and "must not be an MCP bearer token" in done.stderr
        # ...and even a hash of it written to the store by hand does not let the token in.
        await trio.to_thread.run_sync(
            Store.set_setting_in_file,
            str(tmp_path / "data" / "gateway.db"),
            PASSWORD_KEY,
            hash_password(BEARER),
        )
        with trio.fail_after(20):  # the gateway reads the setting every 2 s: the old session ends
            while True:
                if (await web.http.get("/")).status_code == 303:
                    break
                await trio.sleep(0.2)
        assert (await web.login(BEARER)).status_code == 401
        done = await trio.to_thread.run_sync(set_password, tmp_path / "portero.toml", "the new password!")
        assert done.returncode == 0
        with trio.fail_after(20):
            while True:
                if (await web.login("the new password!")).status_code == 303:
                    break
                await trio.sleep(0.5)
        assert (await web.http.get("/")).status_code == 200
        stranger = Console(g.url)
        assert (await stranger.login(PASSWORD)).status_code == 401  # the old one is gone
        await stranger.aclose()
    finally:
        await web.aclose()
        await stop(g)


async def test_console_off_by_default_and_no_password_refuses_calls(tmp_path: Path) -> None:
    # Without [console]: /console is a 404 and approvals are refused as before (no approver).
    g = await start(tmp_path, config_text(tmp_path, console=""), password=None)
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(g.url + "/console/login")).status_code == 404
        client = await Mcp(g.url).initialize()
        res = await client.call(DELETE, {"what": "x"})
        await client.aclose()
        assert res["isError"] is True and "no approver configured" in text_of(res)
    finally:
        await stop(g)
    # With [console] but no password yet: the model is told why, at once.
    other = tmp_path / "second"
    other.mkdir()
    g = await start(other, config_text(other), password=None)
    try:
        client = await Mcp(g.url).initialize()
        res = await client.call(DELETE, {"what": "x"})
        await client.aclose()
        assert res["isError"] is True and "the console has no password yet" in text_of(res)
        assert "portero console passwd" in "\n".join(g.lines)
        web = Console(g.url)
        page = await web.http.get("/login")
        assert "No password is set" in page.text
        await web.aclose()
    finally:
        await stop(g)


# ----------------------------------------------------------------------------------------- approvals


async def test_console_alone_approves_denies_with_reason_and_grants(
    tmp_path: Path, gw: GatewayProcess, web: Console, nursery: trio.Nursery
) -> None:
    assert (await web.login()).status_code == 303
    client = await Mcp(gw.url).initialize()
    try:
        # The admin sees the real arguments (the model sent the fake name).
        later = spawn(nursery, client.call, DELETE, {"what": "the files of John Doe"})
        [aid] = await pending_ids(web)
        page = await web.page("/approvals")
        assert "the files of Jane Realname" in page and "John Doe" not in page
        assert 'data-tool="t/delete_thing"' in page and "rule:t/delete_thing" in page
        overview = await web.page("/")
        assert 'href="/console/approvals#approval-' in overview
        r = await web.submit("/approvals", f"/approvals/{aid}", {"action": "approve"})
        assert flash(r.text) == "Approved t/delete_thing"
        res = await later.wait()
        assert text_of(res) == "deleted the files of John Doe"
        # Huge arguments are cut on the page (it refreshes every 2 s); the call gets them whole.
        later = spawn(nursery, client.call, DELETE, {"what": "x" * 100_000})
        [big] = await pending_ids(web)
        page = await web.page("/approvals")
        assert "more characters)" in page and len(page) < 40_000
        await web.submit("/approvals", f"/approvals/{big}", {"action": "approve"})
        assert text_of(await later.wait()) == "deleted " + "x" * 100_000
        # Deny with a reason, written with the real name: the model reads it with the fake one.
        later = spawn(nursery, client.call, DELETE, {"what": "y"})
        [aid2] = await pending_ids(web)
        r = await web.submit(
            "/approvals", f"/approvals/{aid2}", {"action": "deny", "reason": "ask Jane Realname first"}
        )
        assert flash(r.text).startswith("Denied t/delete_thing")
        res = await later.wait()
        assert res["isError"] is True and "denied by the admin: ask John Doe first" in text_of(res)
        # Approve 30m: the call runs, and the next one runs without asking.
        later = spawn(nursery, client.call, DELETE, {"what": "z"})
        [aid3] = await pending_ids(web)
        r = await web.submit("/approvals", f"/approvals/{aid3}", {"action": "approve30"})
        assert "granted it for 30m" in flash(r.text)
        assert not (await later.wait()).get("isError")
        assert text_of(await client.call(DELETE, {"what": "w"})) == "deleted w"
        grants = await web.page("/grants")
        assert 'data-pattern="t/delete_thing"' in grants
        # A second decision of a decided approval says who decided.
        r = await web.submit("/approvals", f"/approvals/{aid}", {"action": "deny"})
        assert flash(r.text) == "Already decided: t/delete_thing was approved in the console"
    finally:
        await client.aclose()
    rows = db_rows(tmp_path, "SELECT tool, decision, source, outcome FROM audit ORDER BY id")
    assert [(r["decision"], r["source"]) for r in rows] == [
        ("approved", "console"),
        ("approved", "console"),
        ("rejected", "console"),
        ("approved", "console"),
        ("allow", "grant:t/delete_thing"),
    ]
    approvals = db_rows(tmp_path, "SELECT state, source, reason FROM approvals ORDER BY created_at")
    assert [(a["state"], a["source"]) for a in approvals] == [
        ("approved", "console"),
        ("approved", "console"),
        ("rejected", "console"),
        ("approved", "console"),
    ]
    assert approvals[2]["reason"] == "ask John Doe first"


async def test_console_and_telegram_first_decision_wins(tmp_path: Path, nursery: trio.Nursery) -> None:
    fake = FakeBotAPI()
    fake.wait_timeout = 15.0
    await nursery.start(fake.serve)
    telegram = (
        f'[telegram]\nbot_token = "{TOKEN}"\nadmin_chat_id = {ADMIN}\napi_base = "{fake.api_base}"\n'
        'approval_timeout = "60s"\n'
    )
    g = await start(tmp_path, config_text(tmp_path, telegram=telegram))
    web = Console(g.url)
    client = await Mcp(g.url).initialize()
    try:
        await fake.wait_for_call("setMyCommands")
        assert (await web.login()).status_code == 303
        # Decided in the console: the Telegram message is edited to say so, its buttons gone.
        since = len(fake.calls)
        later = spawn(nursery, client.call, DELETE, {"what": "a"})
        msg = await asked(fake, since)
        [aid] = await pending_ids(web)
        assert aid == approval_id(msg)
        since = len(fake.calls)
        await web.submit("/approvals", f"/approvals/{aid}", {"action": "approve"})
        assert text_of(await later.wait()) == "deleted a"
        await edited(fake, msg.message_id, since)
        assert msg.visible_text.startswith("✅ Approved in the console") and msg.buttons == []
        # Decided in Telegram: the console's form answers who did.
        since = len(fake.calls)
        later = spawn(nursery, client.call, DELETE, {"what": "b"})
        msg2 = await asked(fake, since)
        [aid2] = await pending_ids(web)
        token = form_token(await web.page("/approvals"))
        qid = fake.press(msg2, "❌ Deny")
        assert await answer_for(fake, qid) == "Denied"
        assert (await later.wait())["isError"] is True
        r = await web.http.post(
            f"/approvals/{aid2}", data={"action": "approve", "csrf": token}, follow_redirects=True
        )
        assert flash(r.text) == "Already decided: t/delete_thing was rejected in Telegram"
    finally:
        await client.aclose()
        await web.aclose()
        await stop(g)
    rows = db_rows(tmp_path, "SELECT decision, source FROM audit ORDER BY id")
    assert [(r["decision"], r["source"]) for r in rows] == [("approved", "console"), ("rejected", "admin")]


# ------------------------------------------------------------------------------------ audit, grants


async def test_audit_filters_paging_and_bad_input(tmp_path: Path, gw: GatewayProcess, web: Console) -> None:
    assert (await web.login()).status_code == 303
    client = await Mcp(gw.url).initialize()
    try:
        for i in range(60):
            await client.call("t__echo", {"text": f"n{i}"})
        await client.call("t__add", {"a": 1, "b": 2})  # denied by policy
    finally:
        await client.aclose()
    page = await web.page("/audit")
    first = [int(i) for i in re.findall(r'class="audit-row[^"]*" data-id="(\d+)"', page)]
    assert len(first) == 50 and first == sorted(first, reverse=True)
    older = re.search(r'id="older" href="([^"]+)"', page)
    assert older
    r = await web.http.get(html.unescape(older.group(1)).removeprefix("/console"))
    rest = [int(i) for i in re.findall(r'class="audit-row[^"]*" data-id="(\d+)"', r.text)]
    assert len(rest) == 11 and not set(rest) & set(first) and 'id="older"' not in r.text
    # Filters: by decision, by tool pattern, by time.
    denied = await web.page("/audit", decision="deny")
    assert re.findall(r"<td>(t/[a-z_]+)</td>", denied) == ["t/add"]
    echo = await web.page("/audit", tool="t/ec*", since="1h")
    assert len(re.findall(r'class="audit-row', echo)) == 50
    none = await web.page("/audit", until="2020-01-01")
    assert "No calls." in none
    # One record in full.
    record = await web.page(f"/audit/{first[-1]}")
    assert 'class="source">' in record and "t/echo" in record
    # Bad input: a readable message or a 404, never a 500.
    bad = await web.page("/audit", since="yesterday-ish", decision="maybe", tool="t/ x")
    assert "since: expected a duration" in html.unescape(bad)
    assert "decision: expected one of" in bad
    assert "tool: a pattern must not contain whitespace" in bad
    assert (await web.http.get("/audit/999999")).status_code == 404
    assert (await web.http.get("/audit/abc")).status_code == 404
    assert "before: expected" in await web.page("/audit", before="x")
    huge = "9" * 40  # past SQLite's 64-bit integers
    assert "No calls." not in await web.page("/audit", before=huge)
    assert (await web.http.get(f"/audit/{huge}")).status_code == 404
    assert (await web.http.get("/grants/1/revoke")).status_code == 405
    assert (await web.http.post(f"/grants/{huge}/revoke", data={"csrf": "x"})).status_code == 403


async def test_grants_add_revoke_and_refused(tmp_path: Path, gw: GatewayProcess, web: Console) -> None:
    assert (await web.login()).status_code == 303
    r = await web.submit("/grants", "/grants", {"pattern": "t/who*", "duration": "2h", "client": ""})
    assert flash(r.text) == "Granted t/who* for 2h"
    client = await Mcp(gw.url).initialize()
    try:
        res = await client.call("t__whoami", {})
        assert not res.get("isError"), res  # granted: no approval asked
        grant_id = re.search(r'action="/console/grants/(\d+)/revoke"', r.text)
        assert grant_id
        r = await web.submit("/grants", f"/grants/{grant_id.group(1)}/revoke", {})
        assert flash(r.text) == "Revoked t/who*" and 'data-pattern="t/who*"' not in r.text
        clients = await web.page("/clients")
        assert re.search(r"<td>t/whoami</td><td>require-approval</td>", clients)
    finally:
        await client.aclose()
    for data, expected in (
        ({"pattern": "t/x", "duration": "soon"}, "Not granted: duration"),
        ({"pattern": "", "duration": "1h"}, "Not granted:"),
        ({"pattern": "t/x", "duration": "1h", "client": "nobody"}, "Not granted: no client named"),
        ({"pattern": "t/x", "duration": "2d"}, "Not granted: at most 1d"),
    ):
        r = await web.submit("/grants", "/grants", data)
        assert flash(r.text).startswith(expected), (data, flash(r.text))
    # The message of a form is kept in the session for the next page, never taken from the URL.
    assert flash(await web.page("/grants", flash="Your session expired: log in at evil.example")) == ""
    rows = db_rows(tmp_path, "SELECT pattern, created_by, revoked_at FROM grants")
    assert [(x["pattern"], x["created_by"], x["revoked_at"] is not None) for x in rows] == [
        ("t/who*", "console", True)
    ]


async def test_console_approval_timeout_without_telegram_and_reload(tmp_path: Path) -> None:
    g = await start(tmp_path, config_text(tmp_path, console=CONSOLE + 'approval_timeout = "1s"\n'))
    try:
        client = await Mcp(g.url).initialize()
        res = await client.call(DELETE, {"what": "x"})
        assert res["isError"] is True and "approval timed out after 1s" in text_of(res)
        # SIGHUP: a new approval_timeout applies to the next call; the rest of [console] takes a restart.
        g.config_path.write_text(
            config_text(tmp_path, console=CONSOLE + 'approval_timeout = "2s"\nsession_idle = "5m"\n')
        )
        g.proc.send_signal(signal.SIGHUP)
        await trio.to_thread.run_sync(g.wait_log, "([console] changed: that takes a restart)")
        res = await client.call(DELETE, {"what": "x"})
        assert "approval timed out after 2s" in text_of(res)
        await client.aclose()
    finally:
        await stop(g)
    rows = db_rows(tmp_path, "SELECT state, source FROM approvals")
    assert [(r["state"], r["source"]) for r in rows] == [("expired", "timeout")] * 2


async def test_pins_approve_block_and_clients(tmp_path: Path) -> None:
    import hashlib

    ci_token = "ci-token-0123456789abcdef"
    clients = (
        "[[client]]\n"
        'name = "ci"\n'
        f'token_sha256 = "{hashlib.sha256(ci_token.encode()).hexdigest()}"\n'
        'tools = ["t/echo", "t/delete_*"]\n'
        "[client.policy]\n"
        '"t/delete_thing" = "deny"\n'
    )
    g = await start(tmp_path, config_text(tmp_path, extra='[pins]\nmode = "approve"\n' + clients))
    web = Console(g.url)
    client = await Mcp(g.url).initialize()
    try:
        assert (await web.login()).status_code == 303
        # Every tool waits for its first approval: none is listed yet, and the log says so at start.
        ready = await trio.to_thread.run_sync(g.wait_log, "INFO portero: ready: ")
        held = r"ready: 0 tools \(\d+ more held for the admin: `portero pins`\) on http"
        assert re.search(held, ready), ready
        resp, _ = await client.request_raw("tools/list")
        assert resp["result"]["tools"] == []
        page = await web.page("/pins")
        assert 'data-tool="t/echo"' in page and "quarantined: new" in page
        keys = dict(re.findall(r'data-tool="([^"]+)">.*?name="key" value="([^"]+)"', page, re.S))
        r = await web.submit("/pins", "/pins", {"key": keys["t/echo"], "action": "approve"})
        assert flash(r.text) == "t/echo approved"
        r = await web.submit("/pins", "/pins", {"key": keys["t/delete_thing"], "action": "block"})
        assert flash(r.text) == "t/delete_thing blocked"
        assert 'data-tool="t/echo"' not in r.text and 'class="pin state-blocked"' in r.text
        # A stale key (the definition changed, or a forged one) decides nothing.
        r = await web.submit("/pins", "/pins", {"key": "0" * 20, "action": "approve"})
        assert "changed since the page was shown" in flash(r.text)
        with trio.fail_after(10):
            while True:
                resp, _ = await client.request_raw("tools/list")
                if [t["name"] for t in resp["result"]["tools"]] == ["t__echo"]:
                    break
                await trio.sleep(0.1)
        assert db_rows(tmp_path, "SELECT state, decided_by FROM pins WHERE tool = 'echo'") == [
            {"state": "approved", "decided_by": "console"}
        ]
        # Clients: each one's tools (approved ones only) and the policy that applies to each.
        page = await web.page("/clients")
        ci = page.split('id="client-ci"', 1)[1].split("<section", 1)[0]
        assert re.findall(r"<td>(t/[a-z_]+)</td><td>([a-z-]+)</td>", ci) == [("t/echo", "allow")]
        assert 'id="client-default"' in page
    finally:
        await client.aclose()
        await web.aclose()
        await stop(g)


async def test_always_allow_and_rules_from_the_console(
    tmp_path: Path, gw: GatewayProcess, web: Console, nursery: trio.Nursery
) -> None:
    assert (await web.login()).status_code == 303
    client = await Mcp(gw.url).initialize()
    try:
        # "Always allow": an exact rule for this tool, then the call runs; the next runs without asking.
        later = spawn(nursery, client.call, DELETE, {"what": "one"})
        [aid] = await pending_ids(web)
        r = await web.submit("/approvals", f"/approvals/{aid}", {"action": "always-allow"})
        assert flash(r.text) == "t/delete_thing: allowed from now on (a rule on Grants)"
        assert text_of(await later.wait()) == "deleted one"
        assert text_of(await client.call(DELETE, {"what": "two"})) == "deleted two"
        grants = await web.page("/grants")
        rule = r'class="rule" data-pattern="t/delete_thing"><td><code>t/delete_thing</code></td><td>allow<'
        assert re.search(rule, grants)
        # A rule added by hand applies to the next call: t/echo denied.
        r = await web.submit("/grants", "/rules", {"pattern": "t/echo", "action": "deny"})
        assert flash(r.text) == "Rule t/echo = deny"
        res = await client.call("t__echo", {"text": "hi"})
        assert res["isError"] is True and "t/echo" in text_of(res)
        # Removing both: t/echo runs again, t/delete_thing asks again.
        for pattern, was in (("t/echo", "deny"), ("t/delete_thing", "allow")):
            r = await web.submit("/grants", "/rules/remove", {"pattern": pattern})
            assert flash(r.text) == f"Removed the rule {pattern} ({was})"
        assert text_of(await client.call("t__echo", {"text": "hi"})) == "hi"
        clients = await web.page("/clients")
        assert re.search(r"<td>t/delete_thing</td><td>require-approval</td>", clients)
        # Refused input says why and changes nothing.
        r = await web.submit("/grants", "/rules", {"pattern": "t/x", "action": "maybe"})
        assert flash(r.text).startswith("No rule added:")
        r = await web.submit("/grants", "/rules/remove", {"pattern": "t/none"})
        assert flash(r.text) == "There was no rule t/none"
    finally:
        await client.aclose()
    assert db_rows(tmp_path, "SELECT * FROM chat_rules") == []
    rows = db_rows(tmp_path, "SELECT tool, decision, source FROM audit ORDER BY id")
    assert [(r["decision"], r["source"]) for r in rows][:3] == [
        ("approved", "console"),
        ("allow", "chat-rule:t/delete_thing"),
        ("deny", "chat-rule:t/echo"),
    ]


async def test_a_locked_database_is_a_503_page_and_nothing_breaks(
    tmp_path: Path, gw: GatewayProcess, web: Console
) -> None:
    import sqlite3

    assert (await web.login()).status_code == 303
    token = form_token(await web.page("/grants"))
    lock = sqlite3.connect(tmp_path / "data" / "gateway.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the store's budget
        r = await web.http.post("/grants", data={"pattern": "t/*", "duration": "1h", "csrf": token})
        assert r.status_code == 503 and "database did not answer" in r.text
        assert (await web.http.get("/grants")).status_code == 200  # reading still works (WAL)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    r = await web.submit("/grants", "/grants", {"pattern": "t/*", "duration": "1h"})
    assert flash(r.text) == "Granted t/* for 1h"
    assert "console: the database could not answer POST /console/grants" in "\n".join(gw.lines)
