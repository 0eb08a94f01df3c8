"""The ``portero`` command line: the parser and :func:`main`, and the commands ``serve``, ``check``,
``init`` (with the starter config) and ``client-config``. ``migrate`` lives in :mod:`.migrate`, ``audit`` in
:mod:`.audit`, and the config/env loading they share in :mod:`.common` (which also says how ``--env-file``
and the process environment combine).

Every command is a function ``cmd_<name>(args, out, err) -> int`` so tests can drive :func:`main` directly.
Exit codes: 0 success, 1 refused (e.g. ``init`` would overwrite a file), 2 bad usage or invalid config.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import portero
from portero.cli.audit import cmd_audit
from portero.cli.clients import add_parsers as add_client_parsers
from portero.cli.common import build_env, create_private_or_say, load_for_command
from portero.cli.console import add_parser as add_console_parser
from portero.cli.login import add_parsers as add_login_parsers
from portero.cli.migrate import cmd_migrate
from portero.cli.pins import add_parser as add_pins_parser
from portero.cli.pins import check_lock
from portero.cli.tools import cmd_tools
from portero.config import Config
from portero.config.preflight import resolve_command
from portero.durations import format_duration
from portero.logs import Redactor, secret_values

# ------------------------------------------------------------------------------------------ helpers


def _url_host(host: str) -> str:
    """The host to put in a URL clients use: wildcard addresses become loopback, IPv6 gets brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def gateway_url(config: Config) -> str:
    """Base URL of the gateway as a local client would use it (no trailing slash, no ``/mcp``)."""
    s = config.server
    scheme = "https" if s.tls else "http"
    return f"{scheme}://{_url_host(s.host)}:{s.port}"


def _check_redactor(config: Config, env: Mapping[str, str]) -> Redactor:
    """What ``check`` must not print: every secret, and the real side of the replacements."""
    return Redactor([*secret_values(config, env), *(r.real for r in config.replacements)])


# ------------------------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Every problem at once, the filesystem ones included (run_gateway checks those again, for callers
    # that hand it a Config directly).
    loaded = load_for_command(args, err, preflight=True)
    if loaded is None:
        return 2
    config, env = loaded
    # The config's warnings are logged by run_gateway (once each, in the log format chosen).
    from portero.app import run_gateway  # imported late: the other commands never need trio or quart

    return int(run_gateway(config, env) or 0)


# ------------------------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # The same checks serve makes, and what serve would trip over on disk, all in one pass.
    loaded = load_for_command(args, err, preflight=True)
    if loaded is None:
        return 2
    config, env = loaded
    s = config.server
    redact = _check_redactor(config, env)
    print(f"{config.path}: OK", file=out)
    print(
        f"  listen:       {s.host}:{s.port} ({'https' if s.tls else 'http'}) -> {gateway_url(config)}/mcp",
        file=out,
    )
    print(f"  auth:         {s.auth}", file=out)
    print(f"  database:     {os.path.join(s.data_dir, 'gateway.db')}", file=out)
    if s.log_file:
        print(f"  log file:     {s.log_file}", file=out)
    if config.telegram is None:
        without = "require-approval calls will be denied"
        if config.console.enabled:
            without = "the console approves"
        print(f"  telegram:     off ({without})", file=out)
    else:
        t = config.telegram
        chat = t.admin_chat_id if t.admin_chat_id is not None else "paired with /pair"
        print(
            f"  telegram:     on (chat {chat}, approval timeout {format_duration(t.approval_timeout)})",
            file=out,
        )
    if config.console.enabled:
        c = config.console
        timeout = "" if config.telegram else f", approval timeout {format_duration(c.approval_timeout)}"
        print(f"  console:      on at /console (its password: `portero console passwd`{timeout})", file=out)
    rules = len(config.policies.rules)
    print(
        f"  policies:     default {config.policies.default}, {rules} rule{'s' if rules != 1 else ''}",
        file=out,
    )
    print(f"  replacements: {len(config.replacements)}", file=out)
    print(f"  servers:      {len(config.mcp)}", file=out)
    width = max((len(m.name) for m in config.mcp), default=0)
    for m in config.mcp:
        if not m.enabled:
            state = "disabled"
        elif m.skip_reason:
            state = f"skipped: {m.skip_reason}"
        else:
            state = "runs"
        command = redact(m.url if m.remote else shlex.join([m.command, *m.args]))
        extras = []
        if m.remote:
            extras.append(f"{m.transport}, auth {m.auth}")
        if not m.prefix:
            extras.append("prefix = false")
        if m.cwd:
            extras.append(f"cwd {m.cwd}")
        if m.runnable and not m.remote:
            program = resolve_command(m, env)
            if program is not None and program != m.command:
                extras.append(f"found at {program}")
        tail = f" ({', '.join(extras)})" if extras else ""
        print(f"    {m.name.ljust(width)}  [{state}]  {command}{tail}", file=out)
    if config.warnings:
        print("warnings:", file=out)
        for warning in config.warnings:
            print(f"  - {warning}", file=out)
    if getattr(args, "lock", None):
        return check_lock(args.lock, os.path.join(s.data_dir, "gateway.db"), out, err)
    return 0


# -------------------------------------------------------------------------------------------- init

_STARTER = """\
# Portero configuration, written by `portero init`.
# Check it with `portero check --config {name}`; run it with `portero serve --config {name}`.
# Every string may use ${{VAR}} or ${{VAR:-default}}. Durations: "45s", "30m", "2h30m" or seconds.
# Relative paths are relative to this file. The full reference is the example portero.toml.

[server]
host = "127.0.0.1"              # keep loopback unless other machines must connect (then use TLS)
port = 8443
# Clients send "Authorization: Bearer <token>". This one was generated for you; keep it secret.
# To keep it out of this file, use bearer_token = "${{PORTERO_BEARER_TOKEN}}" and set the variable.
bearer_token = "{token}"
auth = "bearer"                 # "bearer" | "none" ("none" only on a loopback host)
tls_cert = ""                   # set both tls_cert and tls_key to serve HTTPS
tls_key = ""
allowed_origins = []            # browser Origins allowed to call the gateway
tool_separator = "__"           # exposed tool name = <server>__<tool>
data_dir = "data"               # SQLite database: data_dir/gateway.db
log_level = "info"              # debug | info | warning | error
log_file = ""                   # optional: also append logs to this file
log_format = "text"             # "text" | "json" (one JSON object per line)

# Approvals over Telegram. Without this section, "require-approval" calls are denied.
# [telegram]
# bot_token = "${{TELEGRAM_BOT_TOKEN}}"
# admin_chat_id = 123456789
# approval_timeout = "2m"

# The web console at /console (approvals, audit, grants, pins); `portero console passwd` sets its password.
# [console]
# enabled = true

# New or changed tool definitions wait for the admin (Telegram, or `portero pins approve <server/tool>`).
[pins]
mode = "approve"                # "approve" | "trust-first" (changes only) | "off"

[policies]
default = "allow"               # "allow" | "deny" | "require-approval"

# Patterns match canonical names "<server>/<tool>"; * matches anything.
[policies.rules]
"*/write_*" = "require-approval"
"*/edit_*" = "require-approval"
"*/move_*" = "require-approval"
"*/create_*" = "require-approval"
"*/delete_*" = "require-approval"
"*/send_*" = "require-approval"

# The model sees `fake`; MCP servers see `real`.
# [[replacements]]
# fake = "John Doe"
# real = "${{REAL_NAME}}"

[[mcp]]
name = "everything"             # letters, digits and "-"; unique
command = "npx"
args = ["-y", "@modelcontextprotocol/server-everything"]
# env = {{ }}                   # extra variables for this server
# required_env = []             # skip this server while any of these is unset or empty
# call_timeout = "60s"

[[mcp]]
name = "filesystem"
command = "npx"
# The folder the model may read and write: $PORTERO_WORKSPACE, else this file's folder.
args = ["-y", "@modelcontextprotocol/server-filesystem", "${{PORTERO_WORKSPACE:-.}}"]
cwd = "."
"""


def render_starter_config(token: str, name: str = "portero.toml") -> str:
    """The text ``portero init`` writes, with ``token`` as the bearer token."""
    return _STARTER.format(token=token, name=name)


def cmd_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = args.path
    text = render_starter_config(secrets.token_urlsafe(32), os.path.basename(path))
    fd = create_private_or_say(path, err)
    if fd is None:
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {path} (with a fresh bearer token; the file is readable only by you)", file=out)
    print(f"next: portero check --config {shlex.quote(path)}", file=out)
    return 0


# ----------------------------------------------------------------------------------- client-config


def identity_lines(fakes: list[str]) -> list[str]:
    """System-prompt lines for the fake identity: ``Email:`` for addresses, ``Name:`` for the first other
    value, ``Identity:`` for the rest."""
    lines = []
    have_name = False
    for fake in fakes:
        if re.fullmatch(r"[^@\s]+@[^@\s]+", fake):
            lines.append(f"Email: {fake}")
        elif not have_name:
            lines.append(f"Name: {fake}")
            have_name = True
        else:
            lines.append(f"Identity: {fake}")
    return lines


def cmd_client_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load_for_command(args, err)
    if loaded is None:
        return 2
    config, _env = loaded
    url = f"{gateway_url(config)}/mcp"
    headers: dict[str, str] = {}
    if config.server.auth == "bearer":
        # Without a bearer_token, each [[client]] has its own token (printed once by portero client add).
        token = config.server.bearer_token or "<your client token>"
        headers["Authorization"] = f"Bearer {token}"

    command = ["claude", "mcp", "add", "--transport", "http", "portero", shlex.quote(url)]
    for key, value in headers.items():
        header = f"{key}: {value}"
        quoted = f'"{header}"' if not re.search(r'["$`\\!]', header) else shlex.quote(header)
        command += ["--header", quoted]
    print("# Claude Code, from a shell:", file=out)
    print(" ".join(command), file=out)
    print(file=out)
    entry: dict[str, Any] = {"type": "http", "url": url}
    if headers:
        entry["headers"] = headers
    print("# Or in .mcp.json:", file=out)
    print(json.dumps({"mcpServers": {"portero": entry}}, indent=2), file=out)
    if config.server.port == 0:
        print("\n# note: port = 0 picks a free port at start-up; use the port the gateway logs.", file=out)
    fakes = [r.fake for r in config.replacements]
    if fakes:
        print(file=out)
        print("# For the client's system prompt (the identity the model should use):", file=out)
        for line in identity_lines(fakes):
            print(line, file=out)
    return 0


# -------------------------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portero",
        description="A self-hosted MCP gateway: many stdio MCP servers behind one authenticated endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"portero {portero.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", metavar="PATH", help="config file (default: $PORTERO_CONFIG, then ./portero.toml)"
        )
        p.add_argument(
            "--env-file",
            metavar="PATH",
            action="append",
            help="KEY=VALUE file (systemd EnvironmentFile syntax) used for ${VAR}; may be repeated (a later "
            "file wins); the real environment wins over them all",
        )

    p = sub.add_parser("serve", help="run the gateway in the foreground")
    config_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate the config and show what would run")
    config_options(p)
    p.add_argument(
        "--lock", metavar="FILE", help="also fail (exit 1) when tool definitions drift from this lock file"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("init", help="write a commented starter config with a fresh bearer token")
    p.add_argument("path", nargs="?", default="portero.toml", metavar="PATH")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("client-config", help="print how to connect Claude Code to this gateway")
    config_options(p)
    p.set_defaults(func=cmd_client_config)

    p = sub.add_parser("migrate", help="convert an original Portero install into one portero.toml")
    p.add_argument("dir", metavar="DIR")
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write here (mode 0600, never overwrites) instead of stdout; literal secrets found in mcps.json "
        "go to an env file beside it (PATH with .env for its extension)",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("audit", help="print audit records")
    config_options(p)
    p.add_argument("--since", metavar="DURATION", help='only records newer than this, e.g. "1h" or "2d"')
    p.add_argument("--tool", metavar="PATTERN", help='canonical tool name or pattern, e.g. "github/*"')
    p.add_argument(
        "--client", metavar="NAME", help='only the calls of this [[client]] ("default": bearer_token)'
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N records")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("tools", help="list the running gateway's tools with the policy that applies and why")
    config_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_tools)

    add_login_parsers(sub, config_options)  # login, logout: OAuth of remote servers
    add_pins_parser(sub, config_options)  # pins: pinned tool definitions
    add_console_parser(sub, config_options)  # console passwd: the web console's password
    add_client_parsers(sub, config_options)  # client add|list|revoke: a token per client
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``portero`` script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        result: int = args.func(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`portero audit | head`): stop quietly, as other command-line tools do.
        # stdout is pointed at /dev/null so that the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it
    return result


__all__ = [
    "build_env",
    "build_parser",
    "gateway_url",
    "identity_lines",
    "main",
    "render_starter_config",
]
