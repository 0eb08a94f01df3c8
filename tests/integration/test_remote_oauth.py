"""A remote MCP server behind OAuth, through the real gateway: needs-login → ``portero login`` driven
as a browser would → calls work without a restart → the access token expires and is refreshed → the
refresh token is revoked → needs-login again and one Telegram message.

The OAuth-protected server is ``tests/servers/oauth_server.py``: the official Python SDK's
``MCPServer`` with ``AuthSettings`` (its authorization server routes, protected resource metadata,
bearer middleware with the RFC 8707 resource check) and a small in-memory provider of ours. Picked over
the TypeScript SDK's ``demoInMemoryOAuthProvider`` because the test must set the access token's
lifetime (a few seconds, to see a refresh) and revoke refresh tokens on demand, and the Python
provider protocol makes both a few lines in the same language as the tests, with no Node process. Its
``/authorize`` leads to a consent form the test posts, like a user clicking "Allow".

All traffic is on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from .harness import TOKEN as BEARER
from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN as BOT_TOKEN  # noqa: E402
from fake_botapi import FakeBotAPI  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OAUTH_SERVER = ROOT / "tests" / "servers" / "oauth_server.py"
ADMIN = 4242
ACCESS_TTL = 4  # seconds: the gateway refreshes 0.8 s before expiry


def start_oauth_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(OAUTH_SERVER), "--access-ttl", str(ACCESS_TTL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded by the server: it prints before serving
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"oauth server did not start: {line!r}")
    return proc, m.group(1)


def state_of(gw: GatewayProcess, name: str) -> str:
    for child in gw.health().json()["children"]:
        if child["name"] == name:
            return str(child["state"])
    return "absent"


def wait_state(gw: GatewayProcess, name: str, want: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_of(gw, name) == want:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{name} not {want} within {timeout}s: {gw.health().json()}\n{gw.log_text()[-3000:]}"
    )


def login_as_a_browser(config: Path, server: str) -> tuple[int, str, str]:
    """Run ``portero login``; follow its URL, post the consent, land on its loopback redirect."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "portero", "login", "--config", str(config), server, "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = []
    url = None
    deadline = time.monotonic() + 15
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)", line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        raise AssertionError("no authorization URL printed: " + "".join(printed) + proc.stderr.read())
    with httpx.Client(timeout=10) as browser:
        r = browser.get(url)
        assert r.status_code == 302, r.text
        consent_url = httpx.URL(url).join(r.headers["location"])
        form = browser.get(consent_url)
        req = re.search(r"name=req value='([^']*)'", form.text)
        assert req is not None, form.text
        r = browser.post(consent_url.copy_with(query=None), data={"req": req.group(1), "decision": "approve"})
        assert r.status_code == 302
        redirect = r.headers["location"]
        assert redirect.startswith("http://127.0.0.1:") and "/callback?" in redirect
        page = browser.get(redirect)
        assert page.status_code == 200 and "You can close this tab" in page.text
    out, err = proc.communicate(timeout=15)
    return proc.returncode, "".join(printed) + out, err


def stored_tokens(tmp: Path, server: str) -> dict[str, Any]:
    conn = sqlite3.connect(tmp / "data" / "gateway.db")
    try:
        (data,) = conn.execute("SELECT data FROM oauth_tokens WHERE server = ?", (server,)).fetchone()
    finally:
        conn.close()
    return dict(json.loads(data))


def login_messages(fake: FakeBotAPI, since: int = 0) -> list[str]:
    return [
        str(c.params.get("text"))
        for c in fake.calls[since:]
        if c.method == "sendMessage" and "needs a login" in str(c.params.get("text"))
    ]


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await trio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


async def http(method: str, url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.request(method, url)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    await nursery.start(api.serve)
    return api


async def test_login_refresh_revoke_through_the_gateway(tmp_path: Path, fake: FakeBotAPI) -> None:
    oauth, base = await trio.to_thread.run_sync(start_oauth_server)
    gw: GatewayProcess | None = None
    try:
        telegram = (
            f'[telegram]\nbot_token = "{BOT_TOKEN}"\nadmin_chat_id = {ADMIN}\napi_base = "{fake.api_base}"\n'
        )
        remote = f'[[mcp]]\nname = "remote"\nurl = "{base}/mcp"\nauth = "oauth"\n'
        config = server_toml(tmp_path) + telegram + child_toml("t") + remote
        gw = await trio.to_thread.run_sync(GatewayProcess, tmp_path, config)

        # 1. No login yet: needs-login (the stdio child beside it is ready), and one message to the admin.
        await trio.to_thread.run_sync(wait_state, gw, "remote", "needs-login")
        await trio.to_thread.run_sync(wait_state, gw, "t", "ready")
        await wait_until(lambda: login_messages(fake), 10, "the needs-login message")
        assert "portero login remote" in login_messages(fake)[0]

        # 2. portero login, driven as a browser would; the gateway picks the tokens up, no restart.
        code, out, err = await trio.to_thread.run_sync(login_as_a_browser, gw.config_path, "remote")
        assert code == 0, out + err
        assert "logged in to remote" in out
        await trio.to_thread.run_sync(wait_state, gw, "remote", "ready")
        client = McpHttpClient(gw.url)
        try:
            await trio.to_thread.run_sync(client.initialize)
            res = await trio.to_thread.run_sync(client.call, "remote__echo", {"text": "hello"})
            assert text_of(res) == "echo: hello", res
            first = stored_tokens(tmp_path, "remote")

            # 3. The access token expires; the gateway refreshes it and calls still work.
            await trio.sleep(ACCESS_TTL + 0.5)
            res = await trio.to_thread.run_sync(client.call, "remote__echo", {"text": "later"})
            assert text_of(res) == "echo: later", res
            stats = (await http("GET", f"{base}/_test/stats")).json()
            assert stats["refreshes"] >= 1, stats
            refreshed = stored_tokens(tmp_path, "remote")
            assert refreshed["access_token"] != first["access_token"]
            assert refreshed["refresh_token"] != first["refresh_token"]  # rotated, and written back

            # 4. The refresh token is revoked: needs-login, and exactly one Telegram message.
            since = len(fake.calls)
            assert (await http("POST", f"{base}/_test/revoke")).status_code == 200
            deadline = trio.current_time() + 15
            while state_of(gw, "remote") != "needs-login":
                assert trio.current_time() < deadline, gw.log_text()[-3000:]
                # A call makes the gateway use its (revoked) token: 401, refresh refused. The call
                # itself fails (with a JSON-RPC error or a tool error): the server is unusable now.
                args = {"name": "remote__echo", "arguments": {"text": "again"}}
                resp = await trio.to_thread.run_sync(client.request, "tools/call", args)
                assert "error" in resp or resp["result"].get("isError"), resp
                await trio.sleep(0.3)
            await wait_until(lambda: login_messages(fake, since), 10, "the second needs-login message")
            await trio.sleep(2.5)  # the supervisor's retries and a store poll: still one message
            told = login_messages(fake, since)
            assert len(told) == 1 and "portero login remote" in told[0], told
            assert state_of(gw, "remote") == "needs-login"
        finally:
            client.close()

        # 5. The server never saw the gateway client's token; no token reached the gateway's log.
        stats = (await http("GET", f"{base}/_test/stats")).json()
        seen = stats["seen_authorization"]
        assert seen and all(v.startswith("Bearer ") for v in seen)
        assert not any(BEARER in v for v in seen)
        log = gw.log_text()
        secrets = {v.removeprefix("Bearer ") for v in seen}
        secrets |= {first["access_token"], first["refresh_token"], refreshed["refresh_token"]}
        for secret in secrets:
            assert secret not in log
            assert secret not in out + err
    finally:
        if gw is not None:
            await trio.to_thread.run_sync(gw.stop)
        oauth.terminate()
        await trio.to_thread.run_sync(oauth.wait, 10)
        if oauth.stdout is not None:
            oauth.stdout.close()


async def test_login_errors(tmp_path: Path) -> None:
    """Unknown server, a server that is not OAuth, an authorization server that cannot be reached."""
    config = tmp_path / "portero.toml"
    remote = '[[mcp]]\nname = "remote"\nurl = "http://127.0.0.1:9/mcp"\nauth = "oauth"\n'
    config.write_text(server_toml(tmp_path) + child_toml("t") + remote)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "portero", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    r = run("login", "nope")
    assert r.returncode == 2 and "no server named 'nope'" in r.stderr and "remote" in r.stderr
    r = run("login", "t")
    assert r.returncode == 2 and 'not auth = "oauth"' in r.stderr
    r = run("login", "remote")
    assert r.returncode == 1 and "login to remote failed" in r.stderr, r.stderr
    r = run("logout", "remote")
    assert r.returncode == 0 and "had no stored login" in r.stdout


def login_by_pasting(config: Path, server: str) -> tuple[int, str, str]:
    """``portero login --paste``: the browser's redirect is not served, its address is pasted."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portero",
            "login",
            "--config",
            str(config),
            server,
            "--paste",
            "--timeout",
            "20",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    url = None
    for _ in range(10):
        m = re.search(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)", proc.stdout.readline())
        if m:
            url = m.group(1)
            break
    assert url is not None
    with httpx.Client(timeout=10) as browser:
        consent_url = httpx.URL(url).join(browser.get(url).headers["location"])
        req = re.search(r"name=req value='([^']*)'", browser.get(consent_url).text)
        assert req is not None
        r = browser.post(consent_url.copy_with(query=None), data={"req": req.group(1), "decision": "approve"})
        redirect = r.headers["location"]  # nothing listens there: the admin copies it from the address bar
    out, err = proc.communicate(redirect + "\n", timeout=15)
    return proc.returncode, out, err


async def test_login_by_pasting_then_logout(tmp_path: Path) -> None:
    oauth, base = await trio.to_thread.run_sync(start_oauth_server)
    try:
        config = tmp_path / "portero.toml"
        remote = f'[[mcp]]\nname = "remote"\nurl = "{base}/mcp"\nauth = "oauth"\n'
        config.write_text(server_toml(tmp_path) + remote)
        code, out, err = await trio.to_thread.run_sync(login_by_pasting, config, "remote")
        assert code == 0, out + err
        assert "logged in to remote (with a refresh token" in out
        record = stored_tokens(tmp_path, "remote")
        assert record["access_token"] and record["resource"] == f"{base}/mcp"
        assert record["access_token"] not in out + err
        r = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "portero", "logout", "remote", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        )
        assert r.returncode == 0 and "logged out of remote" in r.stdout
        conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
        try:
            assert conn.execute("SELECT count(*) FROM oauth_tokens").fetchone() == (0,)
        finally:
            conn.close()
    finally:
        oauth.terminate()
        await trio.to_thread.run_sync(oauth.wait, 10)
        if oauth.stdout is not None:
            oauth.stdout.close()
