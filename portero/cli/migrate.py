"""``portero migrate``: convert an original Portero install (``.env`` + ``config/*.json``) into one
portero.toml (:func:`migrate_install` builds the document, :func:`cmd_migrate` writes it)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from typing import Any, TextIO

from portero.config import ConfigError, parse_env_file
from portero.durations import format_duration

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


__all__ = ["cmd_migrate", "migrate_install"]
