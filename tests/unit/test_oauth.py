"""portero.upstream.oauth: the pure parts (challenge parsing, PKCE, metadata URLs, scopes, expiry
arithmetic, the redirect), and OAuthCredentials against an in-memory store and httpx.MockTransport
(refresh before expiry, on a 401, refused, over a failing network; a login seen through the store)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import attrs
import httpx
import pytest
import trio
import trio.testing

from portero.config import McpServer
from portero.upstream.auth import NeedsLogin
from portero.upstream.oauth import (
    REFRESH_MARGIN,
    LoginError,
    OAuthCredentials,
    OAuthRecord,
    authorization_server_metadata_urls,
    authorization_url,
    canonical_resource,
    choose_scope,
    oauth_factory,
    parse_redirect,
    parse_www_authenticate,
    pkce_challenge,
    protected_resource_metadata_urls,
    refresh_due,
    resource_matches,
)

# ------------------------------------------------------------------------------------ pure parts


def test_www_authenticate_bearer_parameters() -> None:
    value = (
        'Bearer error="invalid_token", error_description="The \\"token\\" expired", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", '
        'scope="read write"'
    )
    assert parse_www_authenticate(value) == {
        "error": "invalid_token",
        "error_description": 'The "token" expired',
        "resource_metadata": "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        "scope": "read write",
    }


def test_www_authenticate_other_schemes_and_tokens() -> None:
    assert parse_www_authenticate(None) == {}
    assert parse_www_authenticate("") == {}
    assert parse_www_authenticate('Basic realm="x"') == {}
    # A Basic challenge first, then Bearer with an unquoted value; the Basic parameters are not taken.
    value = 'Basic realm="site", Bearer realm=mcp, resource_metadata="https://a/b"'
    assert parse_www_authenticate(value) == {"realm": "mcp", "resource_metadata": "https://a/b"}
    assert parse_www_authenticate("bearer") == {}
    assert parse_www_authenticate('BEARER Scope="a"') == {"scope": "a"}


def test_pkce_s256_rfc7636_appendix_b() -> None:
    assert pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_protected_resource_metadata_urls() -> None:
    assert protected_resource_metadata_urls("https://mcp.example.com/public/mcp") == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert protected_resource_metadata_urls("https://mcp.example.com/") == [
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    ]
    assert protected_resource_metadata_urls("wss://mcp.example.com:8443/ws", "https://x/meta") == [
        "https://x/meta",
        "https://mcp.example.com:8443/.well-known/oauth-protected-resource/ws",
        "https://mcp.example.com:8443/.well-known/oauth-protected-resource",
    ]


def test_authorization_server_metadata_urls() -> None:
    assert authorization_server_metadata_urls("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]
    assert authorization_server_metadata_urls("https://auth.example.com/tenant1/") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]


def test_resource_matching() -> None:
    assert canonical_resource("HTTPS://MCP.Example.com/mcp/") == "https://mcp.example.com/mcp"
    assert resource_matches("https://mcp.example.com/mcp", "https://mcp.example.com/mcp")
    assert resource_matches("https://mcp.example.com", "https://mcp.example.com/mcp")
    assert resource_matches("https://mcp.example.com/", "https://mcp.example.com/mcp")
    assert not resource_matches("https://mcp.example.com/mc", "https://mcp.example.com/mcp")
    assert not resource_matches("https://evil.example.com/mcp", "https://mcp.example.com/mcp")
    assert not resource_matches("http://mcp.example.com/mcp", "https://mcp.example.com/mcp")


def test_scope_choice() -> None:
    assert choose_scope(("a", "b"), "c", ["d"]) == "a b"
    assert choose_scope((), "c", ["d"]) == "c"
    assert choose_scope((), None, ["d", "e"]) == "d e"
    assert choose_scope((), None, None) is None


def test_refresh_due_with_a_given_clock() -> None:
    now = 1_000_000.0
    # An hour-long token: refreshed within the last minute.
    assert not refresh_due(now + 3600, 3600, now)
    assert not refresh_due(now + REFRESH_MARGIN + 1, 3600, now)
    assert refresh_due(now + REFRESH_MARGIN - 1, 3600, now)
    assert refresh_due(now - 5, 3600, now)
    # A 10 s token: within its last fifth (2 s), not at once.
    assert not refresh_due(now + 10, 10, now)
    assert not refresh_due(now + 2.5, 10, now)
    assert refresh_due(now + 1.5, 10, now)
    # No expiry said: only a 401 refreshes it.
    assert not refresh_due(None, None, now)


def test_authorization_url_keeps_the_endpoints_query() -> None:
    url = authorization_url("https://a/authorize?tenant=x", {"client_id": "c d", "scope": None, "state": "s"})
    assert url == "https://a/authorize?tenant=x&client_id=c%20d&state=s"


def test_parse_redirect() -> None:
    assert parse_redirect("http://127.0.0.1:5/callback?code=abc&state=s1", "s1") == "abc"
    assert parse_redirect(
        "http://127.0.0.1:5/callback?code=abc&state=s1&iss=https%3A%2F%2Fa", "s1", "https://a"
    )
    with pytest.raises(LoginError, match="state"):
        parse_redirect("http://127.0.0.1:5/callback?code=abc&state=other", "s1")
    with pytest.raises(LoginError, match="state"):
        parse_redirect("http://127.0.0.1:5/callback?code=abc", "s1")
    with pytest.raises(LoginError, match="access_denied"):
        parse_redirect("http://127.0.0.1:5/callback?error=access_denied&state=s1", "s1")
    with pytest.raises(LoginError, match="iss"):
        parse_redirect("http://x/cb?code=a&state=s1&iss=https%3A%2F%2Fevil", "s1", "https://a")
    with pytest.raises(LoginError, match="no authorization code"):
        parse_redirect("http://x/cb?state=s1", "s1")


def test_record_repr_and_json_keep_secrets_out_of_repr() -> None:
    rec = OAuthRecord(
        url="https://m/mcp",
        resource="https://m/mcp",
        issuer="https://a",
        token_endpoint="https://a/token",
        client_id="cid",
        client_secret="client-secret-value",
        access_token="access-token-value",
        refresh_token="refresh-token-value",
    )
    text = repr(rec)
    for secret in ("client-secret-value", "access-token-value", "refresh-token-value"):
        assert secret not in text
    assert OAuthRecord.from_json(rec.to_json()) == rec
    got = rec.with_tokens({"access_token": "new", "expires_in": 60, "token_type": "Bearer"}, 100.0)
    assert (got.access_token, got.refresh_token, got.expires_at, got.lifetime) == (
        "new",
        "refresh-token-value",
        160.0,
        60.0,
    )


# ----------------------------------------------------------------------------- OAuthCredentials


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[str, tuple[str, tuple[int, float]]] = {}
        self.version = 0
        self.stamp_reads = 0

    def put(self, server: str, data: str) -> tuple[int, float]:
        self.version += 1
        stamp = (self.version, float(self.version))
        self.records[server] = (data, stamp)
        return stamp

    async def oauth_tokens(self, server: str) -> tuple[str, tuple[int, float]] | None:
        return self.records.get(server)

    async def oauth_tokens_stamp(self, server: str) -> tuple[int, float] | None:
        self.stamp_reads += 1
        found = self.records.get(server)
        return None if found is None else found[1]

    async def save_oauth_tokens(self, server: str, data: str) -> tuple[int, float]:
        return self.put(server, data)


URL = "https://mcp.example.com/mcp"
CFG = McpServer(name="linear", url=URL, auth="oauth", headers={"X-Team": "t1"})


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """The token endpoint: counts refreshes, rotates tokens, refuses a revoked refresh token."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.revoked = False
        self.down = False
        self.forms: list[dict[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url == "https://auth.example.com/token"
        if self.down:
            raise httpx.ConnectError("connection refused")
        form = parse_qs(request.content.decode())
        self.forms.append(form)
        if self.revoked:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "revoked"})
        self.refreshes += 1
        return httpx.Response(
            200,
            json={
                "access_token": f"at-{self.refreshes}",
                "refresh_token": f"rt-{self.refreshes}",
                "expires_in": 100,
                "token_type": "bearer",
            },
        )


def record(**overrides: Any) -> OAuthRecord:
    base = OAuthRecord(
        url=URL,
        resource=URL,
        issuer="https://auth.example.com",
        token_endpoint="https://auth.example.com/token",
        client_id="cid",
        access_token="at-0",
        refresh_token="rt-0",
        expires_at=1_000_100.0,
        lifetime=100.0,
    )
    return attrs.evolve(base, **overrides)


def credentials(store: MemoryStore, server: TokenServer, clock: Clock) -> OAuthCredentials:
    return OAuthCredentials(CFG, store, clock=clock, transport=httpx.MockTransport(server), poll_interval=2.0)


async def test_headers_without_a_login_need_one() -> None:
    creds = credentials(MemoryStore(), TokenServer(), Clock())
    with pytest.raises(NeedsLogin, match="portero login linear"):
        await creds.headers()


async def test_headers_refresh_shortly_before_expiry() -> None:
    store, server, clock = MemoryStore(), TokenServer(), Clock()
    store.put("linear", record().to_json())
    creds = credentials(store, server, clock)
    assert await creds.headers() == {"X-Team": "t1", "Authorization": "Bearer at-0"}
    clock.now += 79  # 21 s left of 100: not yet (a fifth is 20 s)
    assert (await creds.headers())["Authorization"] == "Bearer at-0"
    assert server.refreshes == 0
    clock.now += 2
    assert (await creds.headers())["Authorization"] == "Bearer at-1"
    assert server.refreshes == 1
    form = server.forms[0]
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["rt-0"]
    assert form["resource"] == [URL]
    assert form["client_id"] == ["cid"]
    # The rotated tokens are in the store for the next start.
    saved = OAuthRecord.from_json(store.records["linear"][0])
    assert (saved.access_token, saved.refresh_token, saved.expires_at) == ("at-1", "rt-1", clock.now + 100)


async def test_401_refreshes_once_then_a_revoked_refresh_token_needs_login(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, server, clock = MemoryStore(), TokenServer(), Clock()
    store.put("linear", record().to_json())
    creds = credentials(store, server, clock)
    await creds.headers()
    await trio.sleep(10)  # past RECENT (autojump clock)
    assert await creds.unauthorized('Bearer error="invalid_token"') is True
    assert server.refreshes == 1
    # A second 401 right after (a request sent with the old token): retry, no second refresh.
    assert await creds.unauthorized('Bearer error="invalid_token"') is True
    assert server.refreshes == 1
    await trio.sleep(10)
    server.revoked = True
    with pytest.raises(NeedsLogin, match="refused.*invalid_grant.*portero login linear"):
        await creds.unauthorized('Bearer error="invalid_token"')
    with pytest.raises(NeedsLogin):  # nothing usable in memory; the store's record is the revoked one
        clock.now += 1000
        await creds.headers()


async def test_network_failure_is_oserror_not_needs_login() -> None:
    store, server, clock = MemoryStore(), TokenServer(), Clock()
    store.put("linear", record().to_json())
    creds = credentials(store, server, clock)
    server.down = True
    clock.now += 99
    with pytest.raises(OSError, match="token endpoint auth.example.com"):
        await creds.headers()
    server.down = False
    assert (await creds.headers())["Authorization"] == "Bearer at-1"


async def test_5xx_from_the_token_endpoint_is_oserror() -> None:
    store, clock = MemoryStore(), Clock()
    store.put("linear", record().to_json())
    creds = OAuthCredentials(
        CFG, store, clock=clock, transport=httpx.MockTransport(lambda r: httpx.Response(503, text="busy"))
    )
    clock.now += 99
    with pytest.raises(OSError, match="HTTP 503"):
        await creds.headers()


async def test_tokens_of_another_url_are_not_sent() -> None:
    store = MemoryStore()
    store.put("linear", record(url="https://old.example.com/mcp").to_json())
    creds = credentials(store, TokenServer(), Clock())
    with pytest.raises(NeedsLogin, match="url changed"):
        await creds.headers()


async def test_changed_returns_when_a_login_writes_the_store(autojump_clock: trio.testing.MockClock) -> None:
    store, clock = MemoryStore(), Clock()
    creds = credentials(store, TokenServer(), clock)
    with pytest.raises(NeedsLogin):
        await creds.headers()
    with trio.move_on_after(30):  # nothing changes: it keeps waiting, one read per poll interval
        await creds.changed()
    assert 14 <= store.stamp_reads <= 16

    async def login_later() -> None:
        await trio.sleep(5)
        store.put("linear", record().to_json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(login_later)
        start = trio.current_time()
        await creds.changed()
        assert 5 <= trio.current_time() - start <= 7.5
    assert (await creds.headers())["Authorization"] == "Bearer at-0"


async def test_a_login_elsewhere_wins_over_a_refresh_on_401(autojump_clock: trio.testing.MockClock) -> None:
    store, server, clock = MemoryStore(), TokenServer(), Clock()
    store.put("linear", record().to_json())
    creds = credentials(store, server, clock)
    await creds.headers()
    await trio.sleep(10)
    store.put("linear", record(access_token="at-login").to_json())
    assert await creds.unauthorized(None) is True
    assert server.refreshes == 0
    assert (await creds.headers())["Authorization"] == "Bearer at-login"


async def test_insufficient_scope_needs_login() -> None:
    store = MemoryStore()
    store.put("linear", record().to_json())
    creds = credentials(store, TokenServer(), Clock())
    with pytest.raises(NeedsLogin, match="more scopes \\(admin\\)"):
        await creds.unauthorized('Bearer error="insufficient_scope", scope="admin"')


def test_factory_shares_one_credentials_per_server() -> None:
    store = MemoryStore()
    make = oauth_factory(store)
    a = make(CFG)
    assert make(CFG) is a
    other = McpServer(name="linear", url=URL, auth="oauth", scopes=("x",))
    assert make(other) is not a
    assert "secret" not in repr(a)
