"""The ``portero`` command line.

Every command is a function ``cmd_<name>(args, out, err) -> int`` so tests can drive :func:`main` directly.
Exit codes: 0 success, 1 refused (e.g. ``init`` would overwrite a file), 2 bad usage or invalid config.

Environment for ``${VAR}`` interpolation: the values of ``--env-file`` are loaded first and the process
environment is laid over them, so a variable that is really set wins over the file. This is what
docker compose and python-dotenv do, and it lets a one-off ``GITHUB_TOKEN=... portero serve --env-file ...``
override the file. (Under systemd the unit's ``EnvironmentFile=`` already ends up in the process
environment, so both ways give the same result there.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import sqlite3
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import portero
from portero.config import (
    Config,
    ConfigError,
    default_config_path,
    load_config,
    parse_env_file,
    read_env_file,
)
from portero.durations import format_duration, parse_duration
from portero.logs import Redactor, secret_values

# --------------------------------------------------------------------------------------- environment


def build_env(env_file: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The mapping used for interpolation: ``env_file`` values, overridden by ``base`` (os.environ)."""
    merged: dict[str, str] = {}
    if env_file:
        merged.update(read_env_file(env_file))
    merged.update(os.environ if base is None else base)
    return merged


def _load(args: argparse.Namespace, err: TextIO) -> tuple[Config, dict[str, str]] | None:
    """Load env and config for a command; print problems and return None when anything is wrong."""
    try:
        env = build_env(args.env_file)
        path = args.config or default_config_path(env)
        return load_config(path, env), env
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return None


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
    loaded = _load(args, err)
    if loaded is None:
        return 2
    config, env = loaded
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    from portero.app import run_gateway  # imported late: the other commands never need trio or quart

    return int(run_gateway(config, env) or 0)


# ------------------------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
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
        print("  telegram:     off (require-approval calls will be denied)", file=out)
    else:
        t = config.telegram
        print(
            f"  telegram:     on (chat {t.admin_chat_id}, "
            f"approval timeout {format_duration(t.approval_timeout)})",
            file=out,
        )
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
        command = redact(shlex.join([m.command, *m.args]))
        extras = []
        if not m.prefix:
            extras.append("prefix = false")
        if m.cwd:
            extras.append(f"cwd {m.cwd}")
        tail = f" ({', '.join(extras)})" if extras else ""
        print(f"    {m.name.ljust(width)}  [{state}]  {command}{tail}", file=out)
    if config.warnings:
        print("warnings:", file=out)
        for warning in config.warnings:
            print(f"  - {warning}", file=out)
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

# Approvals over Telegram. Without this section, "require-approval" calls are denied.
# [telegram]
# bot_token = "${{TELEGRAM_BOT_TOKEN}}"
# admin_chat_id = 123456789
# approval_timeout = "2m"

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
    try:
        # O_EXCL: never overwrite, even if the file appears between a check and the write.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{path}: already exists; not overwriting it", file=err)
        return 1
    except OSError as exc:
        print(f"{path}: cannot create: {exc.strerror or exc}", file=err)
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
    loaded = _load(args, err)
    if loaded is None:
        return 2
    config, _env = loaded
    url = f"{gateway_url(config)}/mcp"
    headers: dict[str, str] = {}
    if config.server.auth == "bearer":
        headers["Authorization"] = f"Bearer {config.server.bearer_token}"

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


# ----------------------------------------------------------------------------------------- migrate

_ACTION_ALIASES = {
    "allow": "allow",
    "allowed": "allow",
    "deny": "deny",
    "denied": "deny",
    "block": "deny",
    "require-approval": "require-approval",
    "require_approval": "require-approval",
    "requireapproval": "require-approval",
    "approval": "require-approval",
    "approve": "require-approval",
    "ask": "require-approval",
}


def _normalize_action(value: object, where: str, notes: list[str]) -> str | None:
    if isinstance(value, str):
        action = _ACTION_ALIASES.get(value.strip().lower())
        if action is not None:
            return action
    notes.append(f"{where}: unknown action {value!r}; dropped")
    return None


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _vars_without_default(values: list[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
            if match.group(1) not in names:
                names.append(match.group(1))
    return names


def migrate_install(directory: str, *, notes: list[str]) -> dict[str, Any]:
    """Build a portero.toml document (a dict for tomli_w) from an original Portero install.

    What is read, all optional except that at least one of them must exist:

    - ``DIR/.env``: ``PORT``, ``BEARER_TOKEN``, ``SSL_CERT_PATH``/``SSL_KEY_PATH``,
      ``APPROVAL_TIMEOUT_SECONDS``, ``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_ADMIN_CHAT_ID``. Secrets are *not*
      copied: the TOML refers to them as ``${BEARER_TOKEN}`` and ``${TELEGRAM_BOT_TOKEN}``, so the result is
      run with ``--env-file DIR/.env`` and the secrets stay where they were.
    - ``DIR/config/mcps.json``: ``{"mcps": [{name, command, args, env}]}``, the Claude Desktop style
      ``{"mcpServers": {name: {command, args, env}}}``, or a bare list. ``disabled: true`` becomes
      ``enabled = false``; entries without ``command`` (remote URLs) and ``pinnedTools`` have no
      equivalent and are reported. Variables referenced as ``${VAR}`` in a server's env or args become its
      ``required_env``, so the server is skipped (as the original effectively did) until they are set.
      Names outside ``[A-Za-z0-9-]`` are rewritten with ``-`` (and policy patterns follow).
    - ``DIR/config/policies.json``: ``{"policies" | "rules": {pattern: action}, "defaultPolicy" |
      "default": action}``; actions are matched loosely (``require_approval``, ``approve``... ->
      ``require-approval``).
    - ``DIR/config/replacements.json``: ``{"replacements": [...]}``, a list of
      ``{fake, real, bidirectional, caseSensitive, responseReplacement}``, or a mapping ``{fake: real}``.

    Assumptions: the gateway listens on 127.0.0.1 unless the install had TLS configured (then 0.0.0.0, as
    the original served remote clients); without ``TELEGRAM_ADMIN_CHAT_ID`` (the original's pairing mode)
    no ``[telegram]`` section is written, because this gateway needs a fixed admin chat.
    Anything dropped or guessed is appended to ``notes``.
    """
    config_dir = os.path.join(directory, "config")
    env_path = os.path.join(directory, ".env")
    found = False
    dotenv: dict[str, str] = {}
    if os.path.isfile(env_path):
        found = True
        with open(env_path, encoding="utf-8") as f:
            dotenv = parse_env_file(f.read(), path=env_path)

    doc: dict[str, Any] = {}
    server: dict[str, Any] = {}
    has_tls = bool(dotenv.get("SSL_CERT_PATH") and dotenv.get("SSL_KEY_PATH"))
    server["host"] = "0.0.0.0" if has_tls else "127.0.0.1"
    if not has_tls:
        notes.append('server.host: set to "127.0.0.1"; use "0.0.0.0" (with TLS) if clients connect remotely')
    port = dotenv.get("PORT", "").strip()
    server["port"] = int(port) if port.isdigit() else 8443
    if dotenv.get("BEARER_TOKEN"):
        server["bearer_token"] = "${BEARER_TOKEN}"
    else:
        server["bearer_token"] = "${PORTERO_BEARER_TOKEN}"
        notes.append(
            "server.bearer_token: no BEARER_TOKEN in .env; set PORTERO_BEARER_TOKEN (16+ characters)"
        )
    if has_tls:
        server["tls_cert"] = os.path.abspath(os.path.join(directory, dotenv["SSL_CERT_PATH"]))
        server["tls_key"] = os.path.abspath(os.path.join(directory, dotenv["SSL_KEY_PATH"]))
    server["data_dir"] = "data"
    doc["server"] = server

    if dotenv.get("TELEGRAM_BOT_TOKEN"):
        chat = dotenv.get("TELEGRAM_ADMIN_CHAT_ID", "").strip()
        if re.fullmatch(r"-?\d+", chat):
            telegram: dict[str, Any] = {"bot_token": "${TELEGRAM_BOT_TOKEN}", "admin_chat_id": int(chat)}
            timeout = dotenv.get("APPROVAL_TIMEOUT_SECONDS", "").strip()
            if timeout.isdigit() and int(timeout) > 0:
                telegram["approval_timeout"] = format_duration(int(timeout))
            doc["telegram"] = telegram
        else:
            notes.append(
                "telegram: TELEGRAM_ADMIN_CHAT_ID is not set (pairing mode); add a [telegram] section with "
                "admin_chat_id by hand"
            )

    # MCP servers first: their (possibly rewritten) names are needed for the policies.
    renamed: dict[str, str] = {}
    servers: list[dict[str, Any]] = []
    mcps_path = os.path.join(config_dir, "mcps.json")
    if os.path.isfile(mcps_path):
        found = True
        data = _read_json(mcps_path)
        entries: list[tuple[str, Any]] = []
        if isinstance(data, dict) and isinstance(data.get("mcpServers"), dict):
            entries = list(data["mcpServers"].items())
        elif isinstance(data, dict) and isinstance(data.get("mcps"), list):
            entries = [(str(e.get("name", "")), e) for e in data["mcps"] if isinstance(e, dict)]
        elif isinstance(data, list):
            entries = [(str(e.get("name", "")), e) for e in data if isinstance(e, dict)]
        elif isinstance(data, dict):  # a bare {name: {...}} mapping
            entries = [(k, v) for k, v in data.items() if isinstance(v, dict)]
        used: set[str] = set()
        for index, (raw_name, entry) in enumerate(entries):
            name = re.sub(r"[^A-Za-z0-9-]+", "-", raw_name).strip("-") or f"server{index + 1}"
            base, n = name, 2
            while name in used:
                name, n = f"{base}-{n}", n + 1
            used.add(name)
            if name != raw_name:
                renamed[raw_name] = name
                notes.append(f"mcp {raw_name!r}: renamed to {name!r}")
            command = entry.get("command")
            if not isinstance(command, str) or not command:
                notes.append(f"mcp {raw_name!r}: no command (remote servers are not supported); dropped")
                continue
            item: dict[str, Any] = {"name": name, "command": command}
            args = [str(a) for a in entry.get("args", []) or []]
            if args:
                item["args"] = args
            env = {str(k): str(v) for k, v in (entry.get("env") or {}).items()}
            if env:
                item["env"] = env
            if isinstance(entry.get("cwd"), str) and entry["cwd"]:
                item["cwd"] = entry["cwd"]
            required = _vars_without_default([*args, *env.values()])
            if required:
                item["required_env"] = required
            if entry.get("disabled") is True or entry.get("enabled") is False:
                item["enabled"] = False
            if entry.get("pinnedTools"):
                notes.append(
                    f"mcp {raw_name!r}: pinnedTools has no equivalent; dropped (all tools are exposed)"
                )
            servers.append(item)

    policies_path = os.path.join(config_dir, "policies.json")
    if os.path.isfile(policies_path):
        found = True
        data = _read_json(policies_path)
        policies: dict[str, Any] = {}
        if isinstance(data, dict):
            default = data.get("defaultPolicy", data.get("default"))
            if default is not None:
                action = _normalize_action(default, "policies.default", notes)
                if action:
                    policies["default"] = action
            rules_in = data.get("policies", data.get("rules", {}))
            rules: dict[str, str] = {}
            if isinstance(rules_in, dict):
                for pattern, value in rules_in.items():
                    action = _normalize_action(value, f"policies rule {pattern!r}", notes)
                    if action is None:
                        continue
                    head, slash, tail = str(pattern).partition("/")
                    if slash and head in renamed:
                        pattern = f"{renamed[head]}/{tail}"
                    rules[str(pattern)] = action
            if rules:
                policies["rules"] = rules
        doc["policies"] = policies

    replacements_path = os.path.join(config_dir, "replacements.json")
    if os.path.isfile(replacements_path):
        found = True
        data = _read_json(replacements_path)
        items: list[Any]
        if isinstance(data, dict) and isinstance(data.get("replacements"), list):
            items = data["replacements"]
        elif isinstance(data, list):
            items = data
        elif isinstance(data, dict):
            items = [{"fake": k, "real": v} for k, v in data.items() if isinstance(v, str)]
        else:
            items = []
        out_items = []
        for entry in items:
            if not isinstance(entry, dict) or not entry.get("fake") or not entry.get("real"):
                notes.append(f"replacements: entry {entry!r} has no fake/real; dropped")
                continue
            r: dict[str, Any] = {"fake": str(entry["fake"]), "real": str(entry["real"])}
            for src, dst in (
                ("bidirectional", "bidirectional"),
                ("caseSensitive", "case_sensitive"),
                ("case_sensitive", "case_sensitive"),
            ):
                if isinstance(entry.get(src), bool):
                    r[dst] = entry[src]
            for src in ("responseReplacement", "response_replacement"):
                if isinstance(entry.get(src), str):
                    r["response_replacement"] = entry[src]
            out_items.append(r)
        if out_items:
            doc["replacements"] = out_items

    if servers:
        doc["mcp"] = servers
    if not found:
        raise ConfigError([f"{directory}: no .env or config/*.json found; is this a Portero install?"])
    return doc


def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import tomli_w

    directory = args.dir
    if not os.path.isdir(directory):
        print(f"{directory}: not a directory", file=err)
        return 2
    notes: list[str] = []
    try:
        doc = migrate_install(directory, notes=notes)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return 2
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"{directory}: cannot read the install: {exc}", file=err)
        return 2
    env_file = os.path.abspath(os.path.join(directory, ".env"))
    header = [
        f"# Converted by `portero migrate` from {os.path.abspath(directory)}.",
        f"# Secrets stay in the .env file: run with --env-file {env_file}",
        "# See the example portero.toml for every key and what it does.",
    ]
    header += [f"# note: {n}" for n in notes]
    text = "\n".join(header) + "\n\n" + tomli_w.dumps(doc)
    for note in notes:
        print(f"note: {note}", file=err)
    if args.output:
        try:
            with open(args.output, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            print(f"{args.output}: already exists; not overwriting it", file=err)
            return 1
        print(
            f"wrote {args.output}; check it with: portero check --config {shlex.quote(args.output)} "
            f"--env-file {shlex.quote(env_file)}",
            file=out,
        )
    else:
        out.write(text)
    return 0


# ------------------------------------------------------------------------------------------- audit


def _format_rows(rows: list[dict[str, Any]]) -> list[str]:
    columns = ("ts", "tool", "decision", "source", "outcome", "duration_ms", "session", "arguments")
    table = []
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            if col == "arguments":
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                text = text if len(text) <= 80 else text[:77] + "..."
            elif col == "session":
                text = str(value or "")[:8]
            elif value is None:
                text = "-"
            else:
                text = str(value)
            cells.append(text)
        table.append(cells)
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for cells in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return lines


def cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    since: float | None = None  # seconds back from now, as read_audit takes it
    if args.since:
        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            print(f"--since: {exc}", file=err)
            return 2
    loaded = _load(args, err)
    if loaded is None:
        return 2
    config, _env = loaded
    db_path = os.path.join(config.server.data_dir, "gateway.db")
    if not os.path.exists(db_path):
        print("no records", file=out)
        return 0
    try:
        from portero.store import read_audit
    except ImportError:
        print("audit: this build has no record store (portero.store)", file=err)
        return 2
    try:
        rows = read_audit(db_path, since=since, tool=args.tool, limit=args.limit)
    except (OSError, sqlite3.Error) as exc:
        print(f"{db_path}: cannot read audit records: {exc}", file=err)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, separators=(",", ":")), file=out)
    elif not rows:
        print("no records", file=out)
    else:
        for line in _format_rows(rows):
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
            help="KEY=VALUE file (systemd EnvironmentFile syntax) used for ${VAR}; the real environment wins",
        )

    p = sub.add_parser("serve", help="run the gateway in the foreground")
    config_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate the config and show what would run")
    config_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("init", help="write a commented starter config with a fresh bearer token")
    p.add_argument("path", nargs="?", default="portero.toml", metavar="PATH")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("client-config", help="print how to connect Claude Code to this gateway")
    config_options(p)
    p.set_defaults(func=cmd_client_config)

    p = sub.add_parser("migrate", help="convert an original Portero install into one portero.toml")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-o", "--output", metavar="PATH", help="write here (never overwrites) instead of stdout")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("audit", help="print audit records")
    config_options(p)
    p.add_argument("--since", metavar="DURATION", help='only records newer than this, e.g. "1h" or "2d"')
    p.add_argument("--tool", metavar="PATTERN", help='canonical tool name or pattern, e.g. "github/*"')
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N records")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_audit)
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
    result: int = args.func(args, sys.stdout, sys.stderr)
    return result


__all__ = [
    "build_env",
    "build_parser",
    "gateway_url",
    "identity_lines",
    "main",
    "migrate_install",
    "render_starter_config",
]
