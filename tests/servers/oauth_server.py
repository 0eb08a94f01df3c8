"""An OAuth-protected MCP server with its own authorization server, on 127.0.0.1, for the tests.

Built on the official Python SDK (``mcp``): ``MCPServer`` with ``AuthSettings`` serves the
authorization server (RFC 8414 metadata, ``/authorize``, ``/token``, ``/register`` for dynamic client
registration, ``/revoke``), the protected resource metadata (RFC 9728) and the Streamable HTTP MCP
endpoint ``/mcp`` behind the SDK's bearer middleware (401 with ``resource_metadata``; tokens must have
been issued for this resource, RFC 8707). What is ours is the in-memory provider below, which the
tests can steer:

- ``--access-ttl SECONDS``: access tokens expire this soon (refresh tokens live on);
- a consent page: ``/authorize`` redirects to ``GET /consent?req=…``, a form the browser POSTs
  (``decision=approve`` or ``deny``) before being sent back to the client's redirect URI;
- ``POST /_test/revoke``: every refresh token (and access token) is revoked at once;
- ``GET /_test/stats``: how many codes and refreshes were issued, and every distinct
  ``Authorization`` value the MCP endpoint received (to show which tokens reached it).

Prints ``listening on http://127.0.0.1:<port>`` when ready. Tool: ``echo(text)``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import secrets
import socket
import sys
import time
import warnings
from typing import Any

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response


class Provider:
    """In-memory authorization server state; see the module docstring."""

    def __init__(self, access_ttl: int) -> None:
        self.access_ttl = access_ttl
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.pending: dict[str, tuple[str, AuthorizationParams]] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.stats: dict[str, Any] = {"codes": 0, "refreshes": 0, "refresh_refused": 0, "registrations": 0}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info
        self.stats["registrations"] += 1

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        req = secrets.token_urlsafe(16)
        assert client.client_id is not None
        self.pending[req] = (client.client_id, params)
        return f"/consent?req={req}"

    def consent(self, req: str, approve: bool) -> str:
        client_id, params = self.pending.pop(req)
        if not approve:
            return construct_redirect_uri(str(params.redirect_uri), error="access_denied", state=params.state)
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        self.stats["codes"] += 1
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = int(time.time()) + self.access_ttl
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires, resource=resource
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.access_ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        self.codes.pop(authorization_code.code, None)
        assert client.client_id is not None
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        found = self.refresh.get(refresh_token)
        if found is None:
            self.stats["refresh_refused"] += 1
        return found

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        if self.refresh.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token revoked")
        self.stats["refreshes"] += 1
        assert client.client_id is not None
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at <= time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    def revoke_all(self) -> None:
        self.access.clear()
        self.refresh.clear()


class RecordAuthorization:
    """ASGI middleware: remembers every distinct Authorization value sent to the MCP endpoint."""

    def __init__(self, app: Any, seen: set[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            for name, value in scope["headers"]:
                if name == b"authorization":
                    self.seen.add(value.decode("latin-1"))
        await self.app(scope, receive, send)


def build(port: int, access_ttl: int) -> tuple[Any, Provider, set[str]]:
    base = f"http://127.0.0.1:{port}"
    provider = Provider(access_ttl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server: MCPServer[Any] = MCPServer(
            name="oauth-test",
            auth_server_provider=provider,
            auth=AuthSettings(
                issuer_url=base,  # type: ignore[arg-type]
                resource_server_url=f"{base}/mcp",  # type: ignore[arg-type]
                validate_token_resource=True,
                client_registration_options=ClientRegistrationOptions(enabled=True, valid_scopes=["mcp"]),
                revocation_options=RevocationOptions(enabled=True),
                required_scopes=[],
            ),
        )

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    @server.custom_route("/consent", methods=["GET", "POST"])
    async def consent(request: Request) -> Response:
        if request.method == "GET":
            req = html.escape(request.query_params.get("req", ""))
            return HTMLResponse(
                "<form method=post action=/consent>"
                f"<input type=hidden name=req value='{req}'>"
                "<button name=decision value=approve>Allow</button>"
                "<button name=decision value=deny>Deny</button></form>"
            )
        form = await request.form()
        req = str(form.get("req", ""))
        if req not in provider.pending:
            return HTMLResponse("unknown request", status_code=400)
        return RedirectResponse(provider.consent(req, form.get("decision") == "approve"), status_code=302)

    seen: set[str] = set()

    @server.custom_route("/_test/revoke", methods=["POST"])
    async def revoke(request: Request) -> Response:
        provider.revoke_all()
        return JSONResponse({"ok": True})

    @server.custom_route("/_test/stats", methods=["GET"])
    async def stats(request: Request) -> Response:
        return JSONResponse({**provider.stats, "seen_authorization": sorted(seen)})

    app = server.streamable_http_app(host="127.0.0.1")
    return RecordAuthorization(app, seen), provider, seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--access-ttl", type=int, default=3600)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections made before uvicorn starts wait in the backlog
    port = sock.getsockname()[1]
    app, _provider, _seen = build(port, args.access_ttl)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    sys.stdout.flush()
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
