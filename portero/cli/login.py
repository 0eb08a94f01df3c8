"""``portero login <server>`` and ``portero logout <server>``: the OAuth login of a remote server with
``auth = "oauth"`` (see :mod:`portero.upstream.oauth`).

``login`` discovers the server's authorization server, registers Portero there if it must, prints the
authorization URL, and waits for the browser to come back to ``http://127.0.0.1:<port>/callback``: a
listener on the loopback address answers one request with the right ``state`` (other requests get a
404), trades the code for tokens, and shows a "you can close this tab" page. With ``--paste`` (a
headless machine, the browser elsewhere) nothing listens: the browser ends on an error page whose
address the admin pastes on stdin. Either way the tokens go to the gateway's database
(``data_dir/gateway.db``, owner-only), where a running gateway finds them within seconds, without a
restart. ``logout`` deletes them.

Exit codes: 0 done; 1 the login failed (refused, timed out, unreachable); 2 bad usage (no such
server, not an OAuth server, invalid config).
"""

from __future__ import annotations

import argparse
import hmac
import html
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qs, urlsplit

from portero.cli.common import load_for_command
from portero.config import McpServer

if TYPE_CHECKING:  # imported when a login runs: the other commands need neither trio nor httpx
    import trio

    from portero.upstream.oauth import LoginFlow, OAuthRecord

DEFAULT_TIMEOUT = 300.0  # seconds the login waits for the browser
MAX_REQUEST_HEAD = 16 * 1024
REQUEST_READ_TIMEOUT = 10.0
CALLBACK_PATH = "/callback"


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``login`` and ``logout``; ``config_options`` adds ``--config`` and ``--env-file``."""
    p = sub.add_parser("login", help='log in to a remote server with auth = "oauth" (OAuth in a browser)')
    config_options(p)
    p.add_argument("server", metavar="SERVER", help="the [[mcp]] name")
    p.add_argument(
        "--paste",
        action="store_true",
        help="headless: don't listen for the redirect; paste the address the browser was sent to on stdin",
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="the loopback port of the redirect URI (default: any free port); for a client_id registered "
        "with a fixed redirect URI",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the browser (default {DEFAULT_TIMEOUT:.0f})",
    )
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="delete the stored OAuth tokens of a remote server")
    config_options(p)
    p.add_argument("server", metavar="SERVER", help="the [[mcp]] name")
    p.set_defaults(func=cmd_logout)


def _oauth_server(args: argparse.Namespace, err: TextIO) -> tuple[McpServer, str] | None:
    """The configured server and the database path, or None (said on ``err``)."""
    loaded = load_for_command(args, err)
    if loaded is None:
        return None
    config, _env = loaded
    found = next((m for m in config.mcp if m.name == args.server), None)
    if found is None:
        names = ", ".join(m.name for m in config.mcp if m.auth == "oauth") or "none"
        print(f"no server named {args.server!r} in {config.path} (OAuth servers: {names})", file=err)
        return None
    if not found.remote or found.auth != "oauth":
        what = "a local process" if not found.remote else f'auth = "{found.auth}"'
        print(f'server {found.name} is {what}, not auth = "oauth": it needs no login', file=err)
        return None
    return found, os.path.join(config.server.data_dir, "gateway.db")


def cmd_login(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    found = _oauth_server(args, err)
    if found is None:
        return 2
    cfg, db_path = found
    if not 0 <= args.port <= 65535 or args.timeout <= 0:
        print("--port must be 0-65535 and --timeout positive", file=err)
        return 2
    import trio

    return trio.run(_login, cfg, db_path, args, out, err)


def cmd_logout(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    found = _oauth_server(args, err)
    if found is None:
        return 2
    cfg, db_path = found
    from portero.store import Store

    try:
        deleted = Store.delete_oauth_tokens_in_file(db_path, cfg.name)
    except Exception as exc:  # sqlite3.Error, OSError, StoreError: one line, not a traceback
        print(f"{db_path}: cannot delete the login: {exc}", file=err)
        return 1
    print(f"logged out of {cfg.name}" if deleted else f"{cfg.name} had no stored login", file=out)
    return 0


async def _login(cfg: McpServer, db_path: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import trio

    from portero.store import Store
    from portero.upstream.oauth import LoginError, LoginFlow, OAuthError

    flow = LoginFlow(cfg)
    listener: trio.SocketListener | None = None
    try:
        if args.paste:
            port = args.port or _free_port()
        else:
            listener = (await trio.open_tcp_listeners(args.port, host="127.0.0.1"))[0]
            port = listener.socket.getsockname()[1]
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        url = await flow.start(redirect_uri)
        print(f"Open this URL in a browser to log in to {cfg.name}:\n\n  {url}\n", file=out, flush=True)
        record = None
        with trio.move_on_after(args.timeout):
            if listener is not None:
                print(f"Waiting for the browser to return to {redirect_uri} ...", file=out, flush=True)
                record = await _wait_for_redirect(listener, flow, port)
            else:
                print(
                    "Then paste here the address the browser was sent to (it may show an error page):",
                    file=out,
                )
                print("> ", end="", file=out, flush=True)
                line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                if not line.strip():
                    print("no address was pasted", file=err)
                    return 1
                record = await flow.finish(line.strip())
        if record is None:
            print(f"login to {cfg.name} timed out after {args.timeout:.0f}s: start again", file=err)
            return 1
        await trio.to_thread.run_sync(Store.save_oauth_tokens_in_file, db_path, cfg.name, record.to_json())
    except (LoginError, OAuthError) as exc:
        print(f"login to {cfg.name} failed: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"login to {cfg.name} failed: {exc.strerror or exc}", file=err)
        return 1
    finally:
        if listener is not None:
            await listener.aclose()
    valid = f", access token valid {record.lifetime:.0f}s" if record.lifetime else ""
    refresh = "with a refresh token" if record.refresh_token else "no refresh token"
    print(f"logged in to {cfg.name} ({refresh}{valid}); stored in {db_path}", file=out, flush=True)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_redirect(listener: trio.SocketListener, flow: LoginFlow, port: int) -> OAuthRecord:
    """Serve the loopback redirect until a request with this login's ``state`` arrives; that one is
    answered with the outcome and its record returned (a failed exchange is raised). Other requests
    (a favicon, another login's redirect) are refused and the wait goes on."""
    import trio

    from portero.upstream.oauth import LoginError, OAuthError

    result: list[OAuthRecord] = []
    failure: list[BaseException] = []

    async def handle(stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_READ_TIMEOUT):
                target = await _read_request_target(stream)
                if target is None or urlsplit(target).path != CALLBACK_PATH:
                    await _respond(stream, 404, "Not found.")
                    return
                state = parse_qs(urlsplit(target).query).get("state", [""])[0]
                if not hmac.compare_digest(state.encode(), flow.state.encode()):
                    await _respond(stream, 400, "This is not the login Portero is waiting for.")
                    return
                try:
                    record = await flow.finish(f"http://127.0.0.1:{port}{target}")
                except (LoginError, OAuthError, OSError) as exc:
                    failure.append(exc)
                    await _respond(stream, 400, f"Login failed: {exc}")
                else:
                    result.append(record)
                    text = f"Portero is logged in to {flow.cfg.name}. You can close this tab."
                    await _respond(stream, 200, text)
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(handle, stream, nursery)
    if failure:
        raise failure[0]
    return result[0]


async def _read_request_target(stream: trio.SocketStream) -> str | None:
    """The target of a ``GET`` request line, once the head has been read (bounded); else None."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        head += chunk
        if len(head) > MAX_REQUEST_HEAD:
            return None
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return None
    return parts[1].decode("latin-1")


async def _respond(stream: trio.SocketStream, status: int, text: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    body = (
        "<!doctype html><meta charset=utf-8><title>Portero</title>"
        f"<p style='font-family:sans-serif'>{html.escape(text)}</p>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode()
    import trio

    try:
        await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


__all__ = ["add_parsers", "cmd_login", "cmd_logout"]
