"""``portero tools``: ask the running gateway for its tools (as an MCP client over Streamable HTTP) and
say, for each, its server, canonical name and the policy that applies and why.

The gateway marks every ``tools/list`` item with ``_meta["io.portero/canonical"]`` (``server/tool``);
the decision is the config's policy engine, with the rules from the chat (``chat-rule:<pattern>``) and the
live grants of ``data_dir/gateway.db`` (read-only) applied. Denied tools are not listed by the gateway,
so the deny rules that cover whole servers (and a ``deny`` default) are printed after the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import ssl
import time
from typing import Any, TextIO

import httpx

from portero.cli.common import load_for_command
from portero.config import Config
from portero.core.policy import Grant, PolicyEngine, apply_grant, glob_match
from portero.telegram.render import server_state

CANONICAL_META = "io.portero/canonical"  # the key portero.gateway.router puts in each item's _meta
PROTOCOL_VERSION = "2025-06-18"
TIMEOUT = 30.0  # tools/list may wait for servers still starting (the gateway waits up to 15 s)
MAX_PAGES = 1000


class GatewayError(Exception):
    """One line saying why the gateway could not be asked."""


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _verify(config: Config) -> ssl.SSLContext | bool:
    if not config.server.tls:
        return True
    ctx = ssl.create_default_context()
    try:  # the gateway's own certificate, for a self-signed one
        ctx.load_verify_locations(cafile=config.server.tls_cert)
    except (OSError, ssl.SSLError):
        pass
    return ctx


def _sse_messages(text: str) -> list[Any]:
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            try:
                out.append(json.loads("\n".join(data)))
            except ValueError:
                continue
    return out


class _Client:
    def __init__(self, base: str, token: str | None, verify: ssl.SSLContext | bool) -> None:
        self.base = base
        self.url = base + "/mcp"
        self.http = httpx.Client(timeout=TIMEOUT, verify=verify)
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.session: str | None = None
        self.next_id = 0

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, what: str, body: Any = None) -> httpx.Response:
        headers = dict(self.headers)
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        try:
            if body is None:
                r = self.http.request(method, self.url, headers=headers)
            else:
                r = self.http.request(method, self.url, headers=headers, content=json.dumps(body))
        except httpx.ConnectError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else (str(exc) or "cannot connect")
            raise GatewayError(
                f"cannot reach the gateway at {self.base}: {reason} — is `portero serve` running?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise GatewayError(f"the gateway at {self.base} did not answer {what} in {TIMEOUT:g}s") from exc
        except httpx.HTTPError as exc:
            raise GatewayError(f"cannot talk to the gateway at {self.base}: {exc}") from exc
        if r.status_code == 401:
            raise GatewayError(
                f"the gateway at {self.base} refused the bearer token (401): server.bearer_token in this "
                "config is not the token the running gateway uses"
            )
        return r

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        r = self._send("POST", method, msg)
        if r.status_code != 200:
            detail = r.text.strip().splitlines()[0][:200] if r.text.strip() else r.reason_phrase
            raise GatewayError(
                f"the gateway at {self.base} answered {method} with HTTP {r.status_code}: {detail}"
            )
        if method == "initialize":
            self.session = r.headers.get("mcp-session-id")
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            messages = _sse_messages(r.text)
        else:
            try:
                messages = [r.json()]
            except ValueError:
                messages = []
        for m in messages:
            if isinstance(m, dict) and m.get("id") == self.next_id:
                if isinstance(m.get("error"), dict):
                    raise GatewayError(f"{method} failed: {m['error'].get('message', m['error'])}")
                result = m.get("result")
                if isinstance(result, dict):
                    return result
        raise GatewayError(f"the gateway at {self.base} sent no answer to {method}")

    def servers(self) -> list[dict[str, Any]]:
        """The servers ``GET /health`` lists (with the token: name, state, error); [] when it says none."""
        try:
            body = self._get_health()
        except (GatewayError, ValueError):
            return []
        children = body.get("children") if isinstance(body, dict) else None
        return [c for c in children or [] if isinstance(c, dict) and isinstance(c.get("name"), str)]

    def _get_health(self) -> Any:
        try:
            r = self.http.get(
                self.base + "/health", headers={"Authorization": self.headers.get("Authorization", "")}
            )
        except httpx.HTTPError as exc:
            raise GatewayError(str(exc)) from exc
        return r.json()  # 200 or 503 (a server not ready): the same body

    def notify(self, method: str) -> None:
        self._send("POST", method, {"jsonrpc": "2.0", "method": method})

    def end(self) -> None:
        if self.session:
            try:
                self._send("DELETE", "DELETE")
            except GatewayError:
                pass  # the listing is what matters; an idle session expires anyway


def list_tools(
    config: Config, base: str, token: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every tool the running gateway at ``base`` lists (all pages) to the client whose ``token`` is
    given (default: ``server.bearer_token``), and its servers as ``/health`` shows them. Raises
    :class:`GatewayError`."""
    if config.server.auth != "bearer":
        token = None
    elif not token:
        token = config.server.bearer_token or None
    client = _Client(base, token, _verify(config))
    try:
        client.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "portero-tools", "version": "1"},
            },
        )
        client.notify("notifications/initialized")
        tools: list[dict[str, Any]] = []
        cursor: Any = None
        for _ in range(MAX_PAGES):
            result = client.request("tools/list", {"cursor": cursor} if cursor is not None else {})
            tools += [t for t in result.get("tools") or [] if isinstance(t, dict)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        client.end()
        return tools, client.servers()
    finally:
        client.close()


def _grants(config: Config, err: TextIO) -> list[Grant]:
    db_path = os.path.join(config.server.data_dir, "gateway.db")
    from portero.store import read_grants

    try:
        return read_grants(db_path)
    except (OSError, sqlite3.Error) as exc:
        print(f"warning: {db_path}: cannot read grants ({exc}); shown without them", file=err)
        return []


def _chat_rules(config: Config, err: TextIO) -> dict[str, str]:
    db_path = os.path.join(config.server.data_dir, "gateway.db")
    from portero.store import read_chat_rules

    try:
        return read_chat_rules(db_path)
    except (OSError, sqlite3.Error) as exc:
        print(f"warning: {db_path}: cannot read the chat's rules ({exc}); shown without them", file=err)
        return {}


def describe(tool: dict[str, Any], engine: PolicyEngine, grants: list[Grant], now: float) -> dict[str, Any]:
    """One row of the listing: name, server, canonical, action, source, and the rule and grant behind it."""
    name = tool.get("name")
    meta = tool.get("_meta")
    canonical = meta.get(CANONICAL_META) if isinstance(meta, dict) else None
    row: dict[str, Any] = {"name": name if isinstance(name, str) else repr(name)}
    if not isinstance(canonical, str) or "/" not in canonical:
        # A gateway older than this command: it does not say whose tool this is.
        return {**row, "server": None, "canonical": None, "action": None, "source": None}
    decision = engine.decide(canonical)
    final = apply_grant(decision, grants, canonical, now)
    row.update(
        server=canonical.split("/", 1)[0],
        canonical=canonical,
        action=final.action,
        source=final.source,
    )
    if final is not decision:
        expires = max(g.expires_at for g in grants if g.pattern == final.rule and g.live(now))
        row.update(rule_action=decision.action, rule_source=decision.source, grant_expires=_iso(expires))
    return row


def whole_server_denials(config: Config, chat: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The configured deny rules (and the rules from the chat, ``chat``) that cover whole servers, as
    ``{"deny": "rule:<pattern>", "servers": [...]}`` (``chat-rule:<pattern>``), and ``{"deny": "default",
    "servers": []}`` when the default is deny (a more specific rule may still allow some of a server's
    tools)."""
    out: list[dict[str, Any]] = []
    servers = [m.name for m in config.mcp]
    rules = [
        *(("rule", p, a) for p, a in config.policies.rules.items()),
        *(("chat-rule", p, a) for p, a in (chat or {}).items()),
    ]
    for prefix, pattern, action in rules:
        if action != "deny" or not pattern.endswith("*"):
            continue
        # pattern = Q* matches every "server/<x>" exactly when it matches "server/".
        covered = [s for s in servers if glob_match(pattern, f"{s}/")]
        if covered:
            out.append({"deny": f"{prefix}:{pattern}", "servers": covered})
    if config.policies.default == "deny":
        out.append({"deny": "default", "servers": []})
    return out


def _why(row: dict[str, Any]) -> str:
    if row.get("source") is None:
        return "(the gateway did not say whose tool this is)"
    if "rule_source" in row:
        until = f"until {row['grant_expires']}"
        return f"{row['source']} {until} (else {row['rule_source']}: {row['rule_action']})"
    return str(row["source"])


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("TOOL", "CANONICAL", "ACTION", "WHY")
    cells = [(r["name"], r["canonical"] or "-", r["action"] or "-", _why(r)) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *cells]
    ]


def cmd_tools(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load_for_command(args, err)
    if loaded is None:
        return 2
    config, _env = loaded
    from portero.cli.main import gateway_url  # main imports this module

    if config.server.port == 0:
        print(
            "server.port is 0 (a free port picked at start-up): cannot know where the gateway listens",
            file=err,
        )
        return 2
    chat = _chat_rules(config, err)
    engine = PolicyEngine(config.policies.default, dict(config.policies.rules), chat=chat)
    base = gateway_url(config)
    try:
        # A [[client]]'s own view: its token in PORTERO_TOKEN (a config may have no bearer_token).
        tools, servers = list_tools(config, base, os.environ.get("PORTERO_TOKEN"))
    except GatewayError as exc:
        print(str(exc), file=err)
        return 2
    now = time.time()
    grants = _grants(config, err)
    rows = [describe(t, engine, grants, now) for t in tools]
    denials = whole_server_denials(config, chat)
    not_ready = not_ready_servers(servers)
    if args.json:
        for obj in [*rows, *denials, *not_ready]:
            print(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), file=out)
        return 0
    if rows:
        for line in _table(rows):
            print(line, file=out)
    else:
        print("no tools", file=out)
    if denials:
        print(file=out)
        print("Denied, so not listed:", file=out)
        for d in denials:
            if d["deny"] == "default":
                print("  default = deny: every tool no rule matches", file=out)
            else:
                kind, _, rule = d["deny"].partition(":")
                kind = "rule" if kind == "rule" else "rule from the chat"
                print(f"  {kind} {rule} = deny: all of {', '.join(d['servers'])}", file=out)
    if not_ready:
        print(file=out)
        print("Not ready, so their tools are not listed:", file=out)
        for s in not_ready:
            hint = f" (run `portero login {s['server']}`)" if s["state"] == "needs-login" else ""
            print(f"  {s['server']}: {s['state']}{hint}", file=out)
    return 0


def not_ready_servers(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{"server": name, "state": ...}`` for each server ``/health`` shows as not ready, its state as
    ``/status`` words it (a remote server that is down: ``failed: <last error>``)."""
    return [{"server": c["name"], "state": server_state(c)} for c in servers if c.get("state") != "ready"]


__all__ = ["GatewayError", "cmd_tools", "describe", "list_tools", "not_ready_servers", "whole_server_denials"]
