"""The OAuth 2.1 client of a remote server with ``auth = "oauth"``, as the MCP authorization
specification (2025-06-18, 2025-11-25) describes it.

Two parts use it:

- ``portero login <server>`` runs a :class:`LoginFlow`: discovery, client registration, the
  authorization URL (authorization code + PKCE S256, ``state``, ``resource``), then the code for tokens;
  the CLI writes the :class:`OAuthRecord` to the store.
- the gateway gives each such server one :class:`OAuthCredentials` (see :func:`oauth_factory`), which
  reads that record from the store, sends the access token, refreshes it shortly before it expires
  and when the server answers 401, and raises :class:`~portero.upstream.auth.NeedsLogin` when only
  the admin can help (no login yet, no refresh token, the refresh refused).

Discovery
    The server is sent an unauthenticated ``initialize``; its 401's ``WWW-Authenticate`` may name the
    protected resource metadata (RFC 9728, ``resource_metadata``) and a ``scope``. Without it, the
    metadata is looked for at ``/.well-known/oauth-protected-resource`` of the server's origin, with
    the server's path after it first, then without. The metadata's ``resource`` must be this server's
    URL or a prefix of it (same origin); it is the ``resource`` parameter (RFC 8707) of every
    authorization and token request. Its first ``authorization_servers`` entry is the issuer, whose
    metadata is read from RFC 8414 ``/.well-known/oauth-authorization-server`` then OpenID discovery
    (path-aware forms for an issuer with a path); its ``issuer`` must be the one asked for, and it
    must list S256 among ``code_challenge_methods_supported`` (the 2025-11-25 spec has a client refuse
    otherwise). A server with no protected resource metadata at all is treated as the 2025-03-26
    spec said: its origin is the authorization server, with ``/authorize``, ``/token`` and ``/register``
    there when it publishes no metadata either.

Client registration, in this order
    1. the configured ``client_id`` (and ``client_secret``: sent as HTTP Basic when the authorization
       server accepts ``client_secret_basic``, else in the form);
    2. a Client ID Metadata Document is *not* used, even where the authorization server advertises
       ``client_id_metadata_document_supported``: the client id would be an https URL serving Portero's
       metadata, and a self-hosted gateway has no public https URL of its own to serve it from;
    3. dynamic client registration (RFC 7591) at ``registration_endpoint``, a public client (PKCE, no
       secret) with the loopback redirect URI of this login; each login registers anew (the redirect
       URI's port changes from one login to the next);
    4. otherwise the login stops, saying to register Portero and set ``client_id``.

Scopes
    ``scopes`` from the config; else the ``scope`` of the 401's challenge; else the metadata's
    ``scopes_supported``; else none asked for.

Secrets
    Tokens, codes, verifiers and client secrets are never formatted into a log line or an exception:
    :class:`OAuthRecord`'s ``repr`` leaves them out, errors quote only what the authorization server
    said (``error`` and ``error_description``). Access tokens go only to the server whose URL was
    logged in to (a changed ``url`` needs a new login), refresh tokens and the client secret only to
    the token endpoint of the authorization server that issued them.

Errors
    ``OAuthError`` (an authorization server answered with an OAuth error), ``LoginError`` (the login
    cannot go on: discovery, registration, the redirect, with a message for the admin); in the
    gateway a refused refresh is ``NeedsLogin``, and a network failure or a 5xx answer ``OSError`` (the
    supervisor retries with back-off).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import attrs
import httpx
import trio

from .auth import Credentials, NeedsLogin

if TYPE_CHECKING:
    from ..config import McpServer

log = logging.getLogger("portero.upstream.oauth")

__all__ = [
    "LoginError",
    "LoginFlow",
    "OAuthCredentials",
    "OAuthError",
    "OAuthRecord",
    "TokenStore",
    "oauth_factory",
]

POLL_INTERVAL = 2.0  # seconds between two looks at the store while a server waits for a login
REFRESH_MARGIN = 60.0  # refresh this long before expiry at most (a fifth of a shorter token's life)
RECENT = 5.0  # a 401 this soon after new tokens came is answered "retry" without another refresh
MAX_DOCUMENT = 256 * 1024  # bytes read of a metadata document or token answer at most
HTTP_TIMEOUT = 30.0
MAX_REDIRECTS = 5  # metadata documents only; requests that carry a secret never follow redirects
PROTOCOL_VERSION = "2025-06-18"


class LoginError(Exception):
    """The login cannot go on; the message says why, for the admin."""


class OAuthError(Exception):
    """An authorization server answered with an OAuth error (``error``, ``error_description``)."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}" if description else error)


# ----------------------------------------------------------------------------------- pure parts

_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_\-.]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


def parse_www_authenticate(value: str | None) -> dict[str, str]:
    """The parameters of the ``Bearer`` challenge in a ``WWW-Authenticate`` value (names lower-cased),
    e.g. ``{"resource_metadata": "https://…", "scope": "read", "error": "invalid_token"}``; ``{}`` when
    there is no Bearer challenge. Other schemes' challenges in the same value are skipped."""
    if not value:
        return {}
    # Split into challenges: a scheme token not followed by "=" starts one.
    out: dict[str, str] = {}
    pos = 0
    in_bearer = False
    while pos < len(value):
        m = _CHALLENGE_PARAM.match(value, pos)
        if m and m.end() > pos:
            if in_bearer:
                raw = m.group(2) if m.group(2) is not None else m.group(3)
                out.setdefault(m.group(1).lower(), re.sub(r"\\(.)", r"\1", raw))
            pos = m.end()
            continue
        scheme = re.match(r"\s*([A-Za-z0-9_\-.!#$%&'*+^`|~]+)\s*,?", value[pos:])
        if scheme is None:
            break
        in_bearer = scheme.group(1).lower() == "bearer"
        if in_bearer and out:
            break  # a second Bearer challenge: keep the first
        pos += scheme.end()
    return out


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a ``code_verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """A fresh ``code_verifier``: 43 characters of the unreserved set, 256 bits of randomness."""
    return secrets.token_urlsafe(32)


def _http_url(url: str) -> str:
    """The http(s) form of a server URL (ws:// and wss:// servers' metadata is served over HTTP)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def _origin(url: str) -> str:
    parts = urlsplit(_http_url(url))
    return f"{parts.scheme}://{parts.netloc}"


def canonical_resource(server_url: str) -> str:
    """The server's canonical URI (RFC 8707 / the MCP spec): scheme and host lower-case, no fragment,
    no trailing slash on the path."""
    parts = urlsplit(_http_url(server_url))
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def protected_resource_metadata_urls(server_url: str, resource_metadata: str | None = None) -> list[str]:
    """Where to look for the protected resource metadata, in order: the challenge's
    ``resource_metadata``, then the path-aware well-known URL, then the origin's."""
    parts = urlsplit(_http_url(server_url))
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [resource_metadata] if resource_metadata else []
    if path:
        urls.append(f"{origin}/.well-known/oauth-protected-resource{path}")
    urls.append(f"{origin}/.well-known/oauth-protected-resource")
    return list(dict.fromkeys(urls))


def authorization_server_metadata_urls(issuer: str) -> list[str]:
    """Where to look for an issuer's metadata, in the MCP spec's order: RFC 8414 then OpenID
    Connect discovery; for an issuer with a path, the path-aware forms (path after the well-known
    part, and OpenID's path before it)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [
            f"{origin}/.well-known/oauth-authorization-server",
            f"{origin}/.well-known/openid-configuration",
        ]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


def resource_matches(resource: str, server_url: str) -> bool:
    """True when ``resource`` (from the metadata) names this server: the same origin, and its path
    the server's path or a parent of it (segment-wise)."""
    r = urlsplit(canonical_resource(resource))
    s = urlsplit(canonical_resource(server_url))
    if (r.scheme, r.netloc) != (s.scheme, s.netloc):
        return False
    return s.path == r.path or s.path.startswith(r.path + "/") or r.path == ""


def choose_scope(
    configured: Sequence[str], challenge_scope: str | None, scopes_supported: Sequence[str] | None
) -> str | None:
    """The ``scope`` to ask for: the config's, else the 401 challenge's, else all the metadata lists."""
    if configured:
        return " ".join(configured)
    if challenge_scope:
        return challenge_scope
    if scopes_supported:
        return " ".join(str(s) for s in scopes_supported)
    return None


def refresh_due(expires_at: float | None, lifetime: float | None, now: float) -> bool:
    """Whether a token expiring at ``expires_at`` (epoch seconds; None: not said) should be refreshed
    at ``now``: within :data:`REFRESH_MARGIN` of expiry, or within a fifth of its ``lifetime`` when
    that is shorter (a token that lives 10 s is refreshed 2 s before it expires, not at once)."""
    if expires_at is None:
        return False
    margin = REFRESH_MARGIN if not lifetime else min(REFRESH_MARGIN, lifetime / 5)
    return now >= expires_at - margin


def authorization_url(endpoint: str, params: Mapping[str, str | None]) -> str:
    """``endpoint`` with ``params`` (None values left out) added to any query it has."""
    parts = urlsplit(endpoint)
    extra = urlencode({k: v for k, v in params.items() if v is not None}, quote_via=quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def parse_redirect(url: str, state: str, issuer: str | None = None) -> str:
    """The authorization code from the URL the browser was redirected to; LoginError when it carries
    an error, another ``state`` (not this login's) or another issuer's ``iss`` (RFC 9207)."""
    query = parse_qs(urlsplit(url.strip()).query)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    got_state = one("state") or ""
    if not hmac.compare_digest(got_state.encode(), state.encode()):
        raise LoginError("the redirect is not for this login (its state does not match); start again")
    if issuer is not None and one("iss") is not None and one("iss") != issuer:
        raise LoginError("the redirect names another authorization server (iss); start again")
    error = one("error")
    if error:
        description = one("error_description")
        raise LoginError(
            f"the authorization server refused: {error}" + (f" ({description})" if description else "")
        )
    code = one("code")
    if not code:
        raise LoginError("the redirect carries no authorization code")
    return code


@attrs.define
class OAuthRecord:
    """What a login leaves in the store for one server. Secrets are left out of ``repr``."""

    url: str  # the server's URL at login: its tokens are sent to it only
    resource: str  # the RFC 8707 resource they were asked for
    issuer: str
    token_endpoint: str
    client_id: str
    client_secret: str = attrs.field(default="", repr=False)
    auth_method: str = "none"  # none | client_secret_basic | client_secret_post
    access_token: str = attrs.field(default="", repr=False)
    refresh_token: str = attrs.field(default="", repr=False)
    expires_at: float | None = None  # epoch seconds
    lifetime: float | None = None  # expires_in of the last token answer
    scope: str | None = None
    obtained_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OAuthRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def with_tokens(self, answer: Mapping[str, Any], now: float) -> OAuthRecord:
        """A copy holding a token answer's tokens (a refresh answer may keep the refresh token)."""
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError("invalid_response", "the token answer has no access_token", 502)
        token_type = answer.get("token_type")
        if isinstance(token_type, str) and token_type.lower() != "bearer":
            raise OAuthError("invalid_response", f"unsupported token_type {token_type[:20]!r}", 502)
        expires_in = answer.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else None
        refresh = answer.get("refresh_token")
        scope = answer.get("scope")
        return attrs.evolve(
            self,
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else self.refresh_token,
            expires_at=None if lifetime is None else now + lifetime,
            lifetime=lifetime,
            scope=scope if isinstance(scope, str) else self.scope,
            obtained_at=now,
        )


# ----------------------------------------------------------------------------------------- HTTP


def http_client(
    cfg: McpServer, *, transport: httpx.AsyncBaseTransport | None = None, follow_redirects: bool = False
) -> httpx.AsyncClient:
    """A client for the server's and its authorization server's endpoints: TLS verified (``ca_file``
    trusted besides the system's), ``connect_timeout`` for connecting."""
    verify: ssl.SSLContext | bool = True
    if cfg.ca_file:
        verify = ssl.create_default_context()
        verify.load_verify_locations(cfg.ca_file)
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(HTTP_TIMEOUT, connect=cfg.connect_timeout),
        follow_redirects=follow_redirects,
        max_redirects=MAX_REDIRECTS,
        transport=transport,
    )


async def _read_json(resp: httpx.Response) -> Any:
    """The body as JSON, read up to :data:`MAX_DOCUMENT` bytes; None when it is not JSON."""
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT:
            return None
    try:
        return json.loads(bytes(body))
    except ValueError:
        return None


async def _get_document(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    """A JSON metadata document, or None when it is not there (any 4xx, or not a JSON object)."""
    try:
        async with client.stream(
            "GET", url, headers={"Accept": "application/json", "MCP-Protocol-Version": PROTOCOL_VERSION}
        ) as resp:
            if resp.status_code >= 500:
                raise LoginError(f"{url}: HTTP {resp.status_code}")
            if resp.status_code != 200:
                return None
            doc = await _read_json(resp)
    except httpx.HTTPError as exc:
        raise LoginError(f"{url}: {_describe(exc)}") from None
    return doc if isinstance(doc, dict) else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def token_request(
    client: httpx.AsyncClient, record: OAuthRecord, form: dict[str, str]
) -> dict[str, Any]:
    """POST ``form`` to the record's token endpoint with its client authentication; the JSON answer.

    Raises :class:`OAuthError` for an OAuth error answer (4xx), ``OSError`` for a network failure,
    a 5xx or an answer that is not JSON. Never follows a redirect (the form carries secrets)."""
    headers = {"Accept": "application/json"}
    form = {**form}
    if record.auth_method == "client_secret_basic" and record.client_secret:
        pair = f"{quote(record.client_id, safe='')}:{quote(record.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = record.client_id
        if record.auth_method == "client_secret_post" and record.client_secret:
            form["client_secret"] = record.client_secret
    host = urlsplit(record.token_endpoint).netloc
    try:
        async with client.stream("POST", record.token_endpoint, data=form, headers=headers) as resp:
            status = resp.status_code
            answer = await _read_json(resp)
    except httpx.HTTPError as exc:
        raise OSError(f"token endpoint {host}: {_describe(exc)}") from None
    if status == 200 and isinstance(answer, dict):
        return answer
    if 400 <= status < 500 and isinstance(answer, dict) and isinstance(answer.get("error"), str):
        desc = answer.get("error_description")
        raise OAuthError(answer["error"][:100], str(desc)[:300] if desc else "", status)
    raise OSError(f"token endpoint {host}: HTTP {status}")


# ------------------------------------------------------------------------------------- discovery


@attrs.frozen
class Discovery:
    """What discovery found for a server."""

    resource: str
    issuer: str
    metadata: dict[str, Any]  # the authorization server's
    scope: str | None


async def discover(cfg: McpServer, client: httpx.AsyncClient) -> Discovery:
    """Protected resource metadata → authorization server metadata (see the module docstring)."""
    url = _http_url(cfg.url)
    challenge = await _probe(cfg, client)
    prm: dict[str, Any] | None = None
    for candidate in protected_resource_metadata_urls(url, challenge.get("resource_metadata")):
        prm = await _get_document(client, candidate)
        if prm is not None and isinstance(prm.get("authorization_servers"), list):
            break
        prm = None
    if prm is not None:
        resource = prm.get("resource")
        if isinstance(resource, str) and resource:
            if not resource_matches(resource, url):
                raise LoginError(
                    f"the server's metadata is for another resource ({resource[:200]}), not {cfg.url}"
                )
        else:
            resource = canonical_resource(url)
        servers = [s for s in prm["authorization_servers"] if isinstance(s, str) and s]
        if not servers:
            raise LoginError("the server's metadata names no authorization server")
        issuer = servers[0]
        supported = prm.get("scopes_supported")
        scopes = [str(s) for s in supported] if isinstance(supported, list) else None
    else:  # the 2025-03-26 spec: the server's origin is its authorization server
        resource, issuer, scopes = canonical_resource(url), _origin(url), None
    metadata = await _authorization_server_metadata(issuer, legacy=prm is None, client=client)
    methods = metadata.get("code_challenge_methods_supported")
    if not (isinstance(methods, list) and "S256" in methods):
        raise LoginError(f"the authorization server {issuer} does not support PKCE S256; refusing to log in")
    for key in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise LoginError(f"the authorization server's metadata has no {key}")
    scope = choose_scope(cfg.scopes, challenge.get("scope"), scopes)
    return Discovery(resource=resource, issuer=issuer, metadata=metadata, scope=scope)


async def _probe(cfg: McpServer, client: httpx.AsyncClient) -> dict[str, str]:
    """An ``initialize`` without a token: the 401's Bearer challenge (``{}`` for any other answer)."""
    if cfg.url.lower().startswith(("ws://", "wss://")):
        return {}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "portero-login", "version": "1"},
        },
    }
    headers = {
        **cfg.headers,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    try:
        async with client.stream("POST", cfg.url, json=body, headers=headers) as resp:
            challenge = resp.headers.get("www-authenticate") if resp.status_code == 401 else None
            session = resp.headers.get("mcp-session-id")
        if session:  # it let us in without a token: don't leave a session behind
            await client.delete(cfg.url, headers={**cfg.headers, "Mcp-Session-Id": session})
    except httpx.HTTPError as exc:
        raise LoginError(f"{cfg.url}: {_describe(exc)}") from None
    return parse_www_authenticate(challenge)


async def _authorization_server_metadata(
    issuer: str, *, legacy: bool, client: httpx.AsyncClient
) -> dict[str, Any]:
    for candidate in authorization_server_metadata_urls(issuer):
        doc = await _get_document(client, candidate)
        if doc is None:
            continue
        found = doc.get("issuer")
        if not isinstance(found, str) or found.rstrip("/") != issuer.rstrip("/"):
            raise LoginError(f"the authorization server's metadata at {candidate} is for another issuer")
        return doc
    if legacy:  # 2025-03-26: default endpoints at the origin
        return {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "registration_endpoint": issuer + "/register",
            "code_challenge_methods_supported": ["S256"],
        }
    raise LoginError(f"no authorization server metadata found for {issuer}")


# ------------------------------------------------------------------------------------------ login


class LoginFlow:
    """One interactive login: :meth:`start` gives the URL to open, :meth:`finish` takes the URL the
    browser was sent back to and returns the record to store. ``transport`` is for tests."""

    def __init__(
        self,
        cfg: McpServer,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._transport = transport
        self._clock = clock
        self._state = secrets.token_urlsafe(24)
        self._verifier = new_verifier()
        self._redirect_uri = ""
        self._record: OAuthRecord | None = None
        self.discovery: Discovery | None = None

    @property
    def state(self) -> str:
        return self._state

    async def start(self, redirect_uri: str) -> str:
        """Discover, register, and return the authorization URL to open in a browser."""
        self._redirect_uri = redirect_uri
        async with http_client(self.cfg, transport=self._transport, follow_redirects=True) as client:
            found = await discover(self.cfg, client)
        self.discovery = found
        async with http_client(self.cfg, transport=self._transport) as client:
            client_id, secret, method = await self._register(found, client)
        self._record = OAuthRecord(
            url=self.cfg.url,
            resource=found.resource,
            issuer=found.issuer,
            token_endpoint=str(found.metadata["token_endpoint"]),
            client_id=client_id,
            client_secret=secret,
            auth_method=method,
            scope=found.scope,
        )
        return authorization_url(
            str(found.metadata["authorization_endpoint"]),
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": found.scope,
                "state": self._state,
                "code_challenge": pkce_challenge(self._verifier),
                "code_challenge_method": "S256",
                "resource": found.resource,
            },
        )

    async def finish(self, redirected_url: str) -> OAuthRecord:
        """Check the redirect and trade its code for tokens. LoginError / OAuthError / OSError."""
        if self._record is None or self.discovery is None:
            raise RuntimeError("start() first")
        code = parse_redirect(redirected_url, self._state, self.discovery.issuer)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri,
            "code_verifier": self._verifier,
            "resource": self._record.resource,
        }
        async with http_client(self.cfg, transport=self._transport) as client:
            answer = await token_request(client, self._record, form)
        return self._record.with_tokens(answer, self._clock())

    async def _register(self, found: Discovery, client: httpx.AsyncClient) -> tuple[str, str, str]:
        """(client_id, client_secret, token endpoint auth method)."""
        meta = found.metadata
        if self.cfg.client_id:
            if not self.cfg.client_secret:
                return self.cfg.client_id, "", "none"
            methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            method = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
            return self.cfg.client_id, self.cfg.client_secret, method
        # Client ID Metadata Documents are skipped on purpose: see the module docstring.
        endpoint = meta.get("registration_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise LoginError(
                f"the authorization server {found.issuer} offers no dynamic client registration: "
                f"register Portero there (redirect URI {self._redirect_uri}) and set client_id "
                f"for server {self.cfg.name}"
            )
        request: dict[str, Any] = {
            "client_name": f"Portero ({self.cfg.name})",
            "redirect_uris": [self._redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        if found.scope:
            request["scope"] = found.scope
        try:
            async with client.stream(
                "POST", endpoint, json=request, headers={"Accept": "application/json"}
            ) as resp:
                status = resp.status_code
                answer = await _read_json(resp)
        except httpx.HTTPError as exc:
            raise LoginError(f"client registration at {endpoint}: {_describe(exc)}") from None
        if (
            status not in (200, 201)
            or not isinstance(answer, dict)
            or not isinstance(answer.get("client_id"), str)
        ):
            what = ""
            if isinstance(answer, dict) and isinstance(answer.get("error"), str):
                what = f": {answer['error'][:100]}"
                if answer.get("error_description"):
                    what += f" ({str(answer['error_description'])[:300]})"
            raise LoginError(
                f"the authorization server refused the client registration (HTTP {status}){what}"
            )
        given_secret = answer.get("client_secret")
        secret = given_secret if isinstance(given_secret, str) else ""
        given_method = answer.get("token_endpoint_auth_method")
        method = given_method if isinstance(given_method, str) else ""
        if method not in ("none", "client_secret_basic", "client_secret_post"):
            method = "client_secret_post" if secret else "none"
        return str(answer["client_id"]), secret, method


# ------------------------------------------------------------------------------------ the gateway


class TokenStore(Protocol):
    """The part of :class:`portero.store.Store` the credentials use."""

    async def oauth_tokens(self, server: str) -> tuple[str, tuple[int, float]] | None: ...

    async def oauth_tokens_stamp(self, server: str) -> tuple[int, float] | None: ...

    async def save_oauth_tokens(self, server: str, data: str) -> tuple[int, float]: ...


class OAuthCredentials:
    """The :class:`~portero.upstream.auth.Credentials` of one ``auth = "oauth"`` server in the gateway.

    The record is read from the store when there is none in memory (at start, after a login) and
    when the server answers 401 (a login made by another process wins over a refresh). Refreshed
    tokens are written back. ``clock`` is the wall clock (expiry is in epoch seconds, shared with
    ``portero login``); ``transport`` is for tests."""

    def __init__(
        self,
        cfg: McpServer,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self._store = store
        self._clock = clock
        self._poll_interval = poll_interval
        self._transport = transport
        self._record: OAuthRecord | None = None
        self._stamp: tuple[int, float] | None = None  # of the record in memory, or last seen missing
        self._fresh_at = -float("inf")  # trio time new tokens came (a refresh, or a login read)
        self._retried: str | None = None  # the fresh access token a 401 was already answered "retry" for
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<OAuthCredentials {self.cfg.name} {'logged in' if self._record else 'no login'}>"

    def _login_needed(self, why: str) -> NeedsLogin:
        return NeedsLogin(f"{why}: run `portero login {self.cfg.name}`")

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            record = self._record or await self._load()
            if refresh_due(record.expires_at, record.lifetime, self._clock()):
                if record.refresh_token:
                    record = await self._refresh(record)
                elif record.expires_at is not None and self._clock() >= record.expires_at:
                    self._record = None
                    raise self._login_needed("the access token expired and there is no refresh token")
        return {**self.cfg.headers, "Authorization": f"Bearer {record.access_token}"}

    async def unauthorized(self, www_authenticate: str | None) -> bool:
        challenge = parse_www_authenticate(www_authenticate)
        if challenge.get("error") == "insufficient_scope":
            wanted = challenge.get("scope")
            raise self._login_needed("the server needs more scopes" + (f" ({wanted})" if wanted else ""))
        async with self._lock:
            current = self._record.access_token if self._record else None
            if trio.current_time() - self._fresh_at < RECENT and self._retried != current:
                # New tokens came just now: that request was likely sent with the old ones. Once per
                # token: a second 401 for the same fresh token goes on to a refresh.
                self._retried = current
                return True
            found = await self._store.oauth_tokens(self.cfg.name)
            if found is not None and found[1] != self._stamp:
                self._use(found)  # a login (or another refresh) wrote new tokens meanwhile
                return True
            record = self._record or await self._load()
            if not record.refresh_token:
                self._record = None
                raise self._login_needed("the server refused the access token and there is no refresh token")
            await self._refresh(record)
            return True

    async def changed(self) -> None:
        """Return once the store's record for this server is not the one last read (a login)."""
        while True:
            await trio.sleep(self._poll_interval)
            try:
                stamp = await self._store.oauth_tokens_stamp(self.cfg.name)
            except Exception as exc:  # a locked or closing store: look again next time
                log.debug("server %s: cannot read the login state: %s", self.cfg.name, type(exc).__name__)
                continue
            if stamp != self._stamp:
                return

    # -- inside the lock --

    async def _load(self) -> OAuthRecord:
        found = await self._store.oauth_tokens(self.cfg.name)
        if found is None:
            self._stamp = None
            raise self._login_needed("not logged in")
        return self._use(found)

    def _use(self, found: tuple[str, tuple[int, float]]) -> OAuthRecord:
        data, self._stamp = found
        try:
            record = OAuthRecord.from_json(data)
        except (ValueError, TypeError):
            self._record = None
            raise self._login_needed("the stored login is unreadable") from None
        if record.url != self.cfg.url:
            # The tokens belong to the server that was logged in to, never to a new url.
            self._record = None
            raise self._login_needed("the server's url changed since the login")
        if not record.access_token:
            self._record = None
            raise self._login_needed("not logged in")
        self._record = record
        self._fresh_at = trio.current_time()
        return record

    async def _refresh(self, record: OAuthRecord) -> OAuthRecord:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": record.refresh_token,
            "resource": record.resource,
        }
        if record.scope:
            form["scope"] = record.scope
        try:
            async with http_client(self.cfg, transport=self._transport) as client:
                answer = await token_request(client, record, form)
            new = record.with_tokens(answer, self._clock())
        except OAuthError as exc:
            if exc.status >= 500:
                raise OSError(f"token refresh failed: {exc}") from None
            # invalid_grant (revoked, expired) and the like: only a new login helps. Keep the record
            # in the store (its client registration); forget it here until the store changes.
            self._record = None
            log.warning(
                "server %s: the authorization server refused the token refresh (%s)", self.cfg.name, exc
            )
            raise self._login_needed(f"the token refresh was refused ({exc.error})") from None
        self._stamp = await self._store.save_oauth_tokens(self.cfg.name, new.to_json())
        self._record = new
        self._fresh_at = trio.current_time()
        log.info(
            "server %s: access token refreshed%s",
            self.cfg.name,
            f" (valid {new.lifetime:.0f}s)" if new.lifetime else "",
        )
        return new


def oauth_factory(store: TokenStore, **options: Any) -> Callable[[McpServer], Credentials]:
    """What the router passes to ``transport_for``: one :class:`OAuthCredentials` per server (the
    shared upstream and its ``per_session`` copies use the same one, so a refresh token is used by one
    refresher only); a server whose config changed (a reload) gets a new one."""
    made: dict[str, OAuthCredentials] = {}

    def credentials(cfg: McpServer) -> Credentials:
        existing = made.get(cfg.name)
        if existing is None or existing.cfg != cfg:
            existing = made[cfg.name] = OAuthCredentials(cfg, store, **options)
        return existing

    return credentials
