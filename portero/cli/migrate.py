"""``portero migrate``: convert an original Portero install (``.env`` + ``*.json``) into one portero.toml
(:func:`migrate_install` builds the document, :func:`render_toml` turns it into text, :func:`cmd_migrate`
writes it).

What an install may hold is not trusted: names of directories, servers and files end up in the output, and
a crafted one must not change what the result *means*. So:

- the TOML is produced by ``tomli_w`` only; the header comments are made of lines from which every
  control, format and line-separator character has been replaced (:func:`comment_safe`), and the text is
  parsed back and compared with the document before it is written;
- paths the install contributes (TLS files, a relative ``cwd``) have their ``$`` doubled, so they are not
  read as ``${VAR}`` by the gateway;
- files are written with mode 0600, created with ``O_EXCL`` (never over an existing file);
- ``.env`` is read only when it is a regular file, never through a symbolic link, and its content never
  appears in a message (errors give line numbers);
- literal secrets in ``mcps.json`` (env values whose names look secret, token-like values, the value of a
  ``--token``-style argument) are not copied into the TOML: they go to a new env file beside it and the TOML
  refers to them as ``${NAME}``;
- every input that is skipped, and every guess, is named in the notes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import stat
import tomllib
import unicodedata
from typing import Any, TextIO

import attrs

from portero.cli.common import create_private, create_private_or_say
from portero.config import ConfigError, parse_config, parse_env_file
from portero.core.policy import validate_pattern
from portero.durations import format_duration
from portero.logs import _SECRET_NAME_RE

__all__ = ["Migration", "cmd_migrate", "comment_safe", "migrate_install", "render_toml"]

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

# The .env keys the original gateway read; any other key is only used when the config refers to it.
_DOTENV_KEYS = (
    "PORT",
    "BEARER_TOKEN",
    "SSL_CERT_PATH",
    "SSL_KEY_PATH",
    "APPROVAL_TIMEOUT_SECONDS",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_ADMIN_CHAT_ID",
)
_INPUTS = ("mcps.json", "policies.json", "replacements.json")
_MCP_KEYS = {"name", "command", "args", "env", "cwd", "disabled", "enabled", "pinnedTools", "type"}
_POLICY_KEYS = {"defaultPolicy", "default", "policies", "rules"}
_REPLACEMENT_KEYS = {
    "fake",
    "real",
    "bidirectional",
    "caseSensitive",
    "case_sensitive",
    "responseReplacement",
    "response_replacement",
}

# Values that are credentials whatever their name says.
_TOKEN_RE = re.compile(
    r"(?:gh[pousr]_|github_pat_|glpat-|xox[abposr]-|sk-|sk_live_|sk_test_|rk_live_|AKIA|ASIA|AIza|ya29\.|"
    r"hf_|npm_|pypi-|Bearer\s+)[A-Za-z0-9_.+/=-]{8,}"
)
_URL_CREDENTIALS_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")
_LONG_OPAQUE_RE = re.compile(r"[A-Za-z0-9_+=-]{32,}")
# Flags whose value is a secret: --token, --api-key, --password, --key...
_SECRET_FLAG_RE = re.compile(
    r"token|secret|passw|credential|api[-_]?key|access[-_]?key|private[-_]?key|(?:^|[-_])key$", re.IGNORECASE
)
_FLAG_RE = re.compile(r"--?([A-Za-z][A-Za-z0-9_-]*)")
_VAR_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


@attrs.frozen
class Migration:
    """What :func:`migrate_install` found: the TOML document, the literal secrets moved out of it
    (variable name -> value, for a new env file), and the install's ``.env`` if it was read."""

    doc: dict[str, Any]
    secrets: dict[str, str] = attrs.field(repr=False)
    dotenv_path: str | None


# ------------------------------------------------------------------------------------------ helpers


def comment_safe(text: str) -> str:
    """``text`` fit for one TOML comment line: control, format (bidi) and line-separator characters
    become ``?``."""
    return "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\t" else ch for ch in text
    )


def _literal(text: str) -> str:
    """A string the gateway reads back as exactly ``text`` (every string is ``${VAR}``-interpolated)."""
    return text.replace("$", "$$")


def _normalize_action(value: object, where: str, notes: list[str]) -> str | None:
    if isinstance(value, str):
        action = _ACTION_ALIASES.get(value.strip().lower())
        if action is not None:
            return action
    shown = repr(value) if isinstance(value, str | int | float | bool) and len(repr(value)) <= 40 else "value"
    notes.append(f"{where}: unknown action {shown}; dropped")
    return None


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the file's content is not repeated.
        raise ConfigError(
            [f"{path}: cannot read: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"]
        ) from None


def _read_dotenv(path: str) -> dict[str, str] | None:
    """The install's ``.env``, or None when there is none. A symbolic link is refused (not followed), and
    nothing of the file's content appears in an error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            [
                f"{path}: is a symbolic link; migrate does not follow it "
                "(put the file itself there, or copy the values you need)"
            ]
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([f"{path}: not a regular file"])
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the lstat
            raise ConfigError([f"{path}: not a regular file"])
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text"]) from None
    return parse_env_file(text, path=path)


def _find_input(directory: str, name: str, notes: list[str]) -> str | None:
    """``DIR/config/<name>``, else ``DIR/<name>`` (beside .env); config/ wins when both exist."""
    in_config = os.path.join(directory, "config", name)
    beside = os.path.join(directory, name)
    found = [p for p in (in_config, beside) if os.path.isfile(p)]
    if len(found) == 2:
        notes.append(
            f"{name}: both config/{name} and {name} (beside .env) exist; read config/{name}, ignored {name}"
        )
    return found[0] if found else None


def env_line(key: str, value: str) -> str:
    """One ``KEY="value"`` line that :func:`portero.config.parse_env_file` reads back as ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{key}="{escaped}"'


def _looks_like_token(value: str) -> bool:
    v = value.strip()
    if _TOKEN_RE.fullmatch(v) or _URL_CREDENTIALS_RE.match(v):
        return True
    return bool(_LONG_OPAQUE_RE.fullmatch(v) and any(c.isdigit() for c in v) and any(c.isalpha() for c in v))


class _Secrets:
    """Literal secrets moved out of the TOML, each under a variable name not used otherwise."""

    def __init__(self, taken: set[str]) -> None:
        self.values: dict[str, str] = {}
        self._taken = set(taken)

    def move(self, value: str, name: str, server: str, where: str) -> str:
        """Keep ``value`` as a new variable (named after ``name``); returns the ``${VAR}`` to write."""
        if not env_line_roundtrips(value):
            raise ConfigError(
                [
                    f"{where}: holds a literal secret with line breaks that an env file cannot hold; "
                    "move it to an environment variable by hand"
                ]
            )
        base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_").upper() or "SECRET"
        if base[0].isdigit():
            base = "_" + base
        var = base
        if var in self._taken:
            var = f"{re.sub(r'[^A-Za-z0-9_]', '_', server).upper()}_{base}"
        candidate, n = var, 2
        while candidate in self._taken:
            candidate, n = f"{var}_{n}", n + 1
        self._taken.add(candidate)
        self.values[candidate] = value
        return f"${{{candidate}}}"


def env_line_roundtrips(value: str) -> bool:
    """Whether :func:`env_line` can hold ``value`` (it cannot hold a bare ``\\r`` and similar breaks)."""
    try:
        return parse_env_file(env_line("K", value)) == {"K": value}
    except ConfigError:
        return False


def _scalar_text(value: object) -> str | None:
    """A JSON scalar as the string a command line or environment would get; None for arrays/objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


# ------------------------------------------------------------------------------------ the sections


def _server_section(dotenv: dict[str, str], directory: str, notes: list[str]) -> dict[str, Any]:
    server: dict[str, Any] = {}
    cert, key = dotenv.get("SSL_CERT_PATH", ""), dotenv.get("SSL_KEY_PATH", "")
    has_tls = bool(cert and key)
    if bool(cert) != bool(key):
        notes.append(".env: only one of SSL_CERT_PATH and SSL_KEY_PATH is set; TLS not configured")
    server["host"] = "0.0.0.0" if has_tls else "127.0.0.1"
    if not has_tls:
        notes.append('server.host: set to "127.0.0.1"; use "0.0.0.0" (with TLS) if clients connect remotely')
    port = dotenv.get("PORT", "").strip()
    if re.fullmatch(r"[0-9]{1,5}", port) and int(port) <= 65535:
        server["port"] = int(port)
    else:
        server["port"] = 8443
        if port:
            notes.append(".env: PORT is not a port number; ignored (port = 8443)")
    if dotenv.get("BEARER_TOKEN"):
        server["bearer_token"] = "${BEARER_TOKEN}"
    else:
        server["bearer_token"] = "${PORTERO_BEARER_TOKEN}"
        notes.append(
            "server.bearer_token: no BEARER_TOKEN in .env; set PORTERO_BEARER_TOKEN (16+ characters)"
        )
    if has_tls:
        base = os.path.abspath(directory)
        server["tls_cert"] = _literal(os.path.normpath(os.path.join(base, cert)))
        server["tls_key"] = _literal(os.path.normpath(os.path.join(base, key)))
    server["data_dir"] = "data"
    return server


def _telegram_section(dotenv: dict[str, str], notes: list[str]) -> dict[str, Any] | None:
    telegram = _telegram(dotenv, notes)
    if telegram is None and dotenv.get("APPROVAL_TIMEOUT_SECONDS", "").strip():
        notes.append(".env: APPROVAL_TIMEOUT_SECONDS ignored (no [telegram] section is written)")
    return telegram


def _telegram(dotenv: dict[str, str], notes: list[str]) -> dict[str, Any] | None:
    chat = dotenv.get("TELEGRAM_ADMIN_CHAT_ID", "").strip()
    if not dotenv.get("TELEGRAM_BOT_TOKEN"):
        if chat:
            notes.append(".env: TELEGRAM_ADMIN_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not; no [telegram]")
        return None
    if not re.fullmatch(r"-?[0-9]+", chat):
        notes.append(
            "telegram: TELEGRAM_ADMIN_CHAT_ID is not set or not a number (pairing mode); add a [telegram] "
            "section with admin_chat_id by hand"
        )
        return None
    telegram: dict[str, Any] = {"bot_token": "${TELEGRAM_BOT_TOKEN}", "admin_chat_id": int(chat)}
    timeout = dotenv.get("APPROVAL_TIMEOUT_SECONDS", "").strip()
    if re.fullmatch(r"[0-9]+", timeout) and int(timeout) > 0:
        telegram["approval_timeout"] = format_duration(int(timeout))
    elif timeout:
        notes.append(".env: APPROVAL_TIMEOUT_SECONDS is not a positive number; ignored (default 2m)")
    return telegram


def _mcp_entries(data: Any, notes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    entries: list[tuple[str, Any]]
    if isinstance(data, dict) and isinstance(data.get("mcpServers"), dict):
        entries = list(data["mcpServers"].items())
        others = sorted(k for k in data if k != "mcpServers")
    elif isinstance(data, dict) and isinstance(data.get("mcps"), list):
        entries = [(str(e.get("name", "")) if isinstance(e, dict) else "", e) for e in data["mcps"]]
        others = sorted(k for k in data if k != "mcps")
    elif isinstance(data, list):
        entries = [(str(e.get("name", "")) if isinstance(e, dict) else "", e) for e in data]
        others = []
    elif isinstance(data, dict):  # a bare {name: {...}} mapping
        entries = list(data.items())
        others = []
    else:
        notes.append("mcps.json: expected an object or an array; no servers read")
        return []
    for key in others:
        notes.append(f"mcps.json: key {key!r} has no equivalent; ignored")
    result = []
    for index, (name, entry) in enumerate(entries):
        if isinstance(entry, dict):
            result.append((name, entry))
        else:
            notes.append(f"mcps.json: entry {index + 1} ({name!r}) is not an object; skipped")
    return result


def _convert_server(
    raw_name: str, name: str, entry: dict[str, Any], directory: str, secrets: _Secrets, notes: list[str]
) -> dict[str, Any] | None:
    label = f"mcp {raw_name!r}"
    command = entry.get("command")
    if not isinstance(command, str) or not command:
        notes.append(f"{label}: no command (remote servers are not supported); dropped")
        return None
    for key in sorted(set(entry) - _MCP_KEYS):
        notes.append(f"{label}: key {key!r} has no equivalent; ignored")
    if entry.get("type") not in (None, "stdio"):
        notes.append(f"{label}: type {entry.get('type')!r} is not stdio; converted as a stdio server")
    item: dict[str, Any] = {"name": name, "command": command}

    raw_args = entry.get("args", [])
    args: list[str] = []
    if isinstance(raw_args, list):
        for index, a in enumerate(raw_args):
            text = _scalar_text(a)
            if text is None:
                notes.append(f"{label}: args[{index}] is not a string; dropped")
            else:
                args.append(text)
    elif raw_args is not None:
        notes.append(f"{label}: args is not an array; ignored")
    moved_args: list[str] = []
    secret_flag: str | None = None
    for index, a in enumerate(args):
        literal = "${" not in a
        flag = _FLAG_RE.fullmatch(a.split("=", 1)[0])
        if literal and flag and "=" in a and _SECRET_FLAG_RE.search(flag.group(1)):
            ref = secrets.move(a.split("=", 1)[1], f"{name}_{flag.group(1)}", name, f"{label}: args[{index}]")
            moved_args.append(f"{a.split('=', 1)[0]}={ref}")
            notes.append(f"{label}: args[{index}]: literal secret moved to the env file as {ref}")
        elif literal and a and ((secret_flag is not None and not a.startswith("-")) or _looks_like_token(a)):
            ref = secrets.move(a, f"{name}_{secret_flag or f'arg{index}'}", name, f"{label}: args[{index}]")
            moved_args.append(ref)
            notes.append(f"{label}: args[{index}]: literal secret moved to the env file as {ref}")
        else:
            moved_args.append(a)
        secret_flag = (
            flag.group(1) if flag and "=" not in a and _SECRET_FLAG_RE.search(flag.group(1)) else None
        )
    if moved_args:
        item["args"] = moved_args

    raw_env = entry.get("env") or {}
    env: dict[str, str] = {}
    if isinstance(raw_env, dict):
        for key, value in raw_env.items():
            text = _scalar_text(value)
            if text is None:
                notes.append(f"{label}: env {key!r} is not a string; dropped")
                continue
            if "${" not in text and text and (_SECRET_NAME_RE.search(str(key)) or _looks_like_token(text)):
                ref = secrets.move(text, str(key), name, f"{label}: env {key!r}")
                notes.append(f"{label}: env {key}: literal secret moved to the env file as {ref}")
                text = ref
            env[str(key)] = text
    else:
        notes.append(f"{label}: env is not an object; ignored")
    if env:
        item["env"] = env

    cwd = entry.get("cwd")
    if isinstance(cwd, str) and cwd:
        if os.path.isabs(cwd):
            item["cwd"] = cwd
        else:
            item["cwd"] = os.path.normpath(os.path.join(_literal(os.path.abspath(directory)), cwd))
            notes.append(f"{label}: relative cwd taken relative to the install directory")
    elif cwd not in (None, ""):
        notes.append(f"{label}: cwd is not a string; ignored")

    # Variables the server refers to (${VAR}, not ${VAR:-default} and not the secrets moved just now)
    # become required_env: the server is skipped, as the original effectively did, until they are set.
    required: list[str] = []
    for value in [*moved_args, *env.values()]:
        for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
            var = match.group(1)
            if var not in required and var not in secrets.values:
                required.append(var)
    if required:
        item["required_env"] = required
    if entry.get("disabled") is True or entry.get("enabled") is False:
        item["enabled"] = False
    for key in ("disabled", "enabled"):
        if key in entry and not isinstance(entry[key], bool):
            notes.append(f"{label}: {key} is not true or false; ignored")
    if entry.get("pinnedTools"):
        notes.append(f"{label}: pinnedTools has no equivalent; dropped (all tools are exposed)")
    return item


def _policies_section(data: Any, renamed: dict[str, str], notes: list[str]) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    if not isinstance(data, dict):
        notes.append("policies.json: expected an object; ignored")
        return policies
    for key in sorted(set(data) - _POLICY_KEYS):
        notes.append(f"policies.json: key {key!r} has no equivalent; ignored")
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
            error = validate_pattern(str(pattern))
            if error is not None:
                notes.append(f"policies rule {pattern!r}: {error}; dropped")
                continue
            rules[str(pattern)] = action
    else:
        notes.append("policies.json: the rules are not an object; ignored")
    if rules:
        policies["rules"] = rules
    return policies


def _replacements_section(data: Any, notes: list[str]) -> list[dict[str, Any]]:
    items: list[Any]
    if isinstance(data, dict) and isinstance(data.get("replacements"), list):
        items = data["replacements"]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items = []
        for index, (k, v) in enumerate(data.items()):
            if isinstance(v, str):
                items.append({"fake": k, "real": v})
            else:
                notes.append(
                    f"replacements.json: entry {index + 1} is not a fake: real pair of strings; dropped"
                )
    else:
        notes.append("replacements.json: expected an object or an array; ignored")
        items = []
    out_items = []
    for index, entry in enumerate(items):
        where = f"replacements.json: entry {index + 1}"
        # The entry itself is never shown: it holds real values.
        if not isinstance(entry, dict) or not entry.get("fake") or not entry.get("real"):
            notes.append(f"{where} has no fake/real; dropped")
            continue
        fake, real = _scalar_text(entry["fake"]), _scalar_text(entry["real"])
        if fake is None or real is None:
            notes.append(f"{where}: fake or real is not a string; dropped")
            continue
        for key in sorted(set(entry) - _REPLACEMENT_KEYS):
            notes.append(f"{where}: key {key!r} has no equivalent; ignored")
        r: dict[str, Any] = {"fake": fake, "real": real}
        for src, dst in (
            ("bidirectional", "bidirectional"),
            ("caseSensitive", "case_sensitive"),
            ("case_sensitive", "case_sensitive"),
        ):
            if src in entry:
                if isinstance(entry[src], bool):
                    r[dst] = entry[src]
                else:
                    notes.append(f"{where}: {src} is not true or false; ignored")
        for src in ("responseReplacement", "response_replacement"):
            if src in entry:
                if isinstance(entry[src], str):
                    r["response_replacement"] = entry[src]
                else:
                    notes.append(f"{where}: {src} is not a string; ignored")
        out_items.append(r)
    return out_items


def _references(value: Any, out: set[str]) -> None:
    if isinstance(value, str):
        out.update(m.group(1) for m in _VAR_REF_RE.finditer(value))
    elif isinstance(value, dict):
        for v in value.values():
            _references(v, out)
    elif isinstance(value, list):
        for v in value:
            _references(v, out)


# -------------------------------------------------------------------------------------------- build


def migrate_install(directory: str, *, notes: list[str]) -> Migration:
    """Build a portero.toml document (a dict for tomli_w) from an original Portero install.

    What is read, all optional except that at least one of them must exist:

    - ``DIR/.env`` (a regular file; a symbolic link is refused): ``PORT``, ``BEARER_TOKEN``,
      ``SSL_CERT_PATH``/``SSL_KEY_PATH``, ``APPROVAL_TIMEOUT_SECONDS``, ``TELEGRAM_BOT_TOKEN``,
      ``TELEGRAM_ADMIN_CHAT_ID``. Its secrets are *not* copied: the TOML refers to them as ``${BEARER_TOKEN}``
      and ``${TELEGRAM_BOT_TOKEN}``, so the result runs with ``--env-file DIR/.env``.
    - ``mcps.json``, ``policies.json`` and ``replacements.json``, each from ``DIR/config/`` or, when not
      there, from ``DIR/`` beside ``.env`` (both present: ``config/`` wins, and a note says so).
    - ``mcps.json``: ``{"mcps": [{name, command, args, env}]}``, the Claude Desktop style
      ``{"mcpServers": {name: {command, args, env}}}``, or a bare list. ``disabled: true`` becomes
      ``enabled = false``; entries without ``command`` (remote URLs) and ``pinnedTools`` have no
      equivalent and are reported. Variables referenced as ``${VAR}`` in a server's env or args become its
      ``required_env``, so the server is skipped (as the original effectively did) until they are set.
      Names outside ``[A-Za-z0-9-]`` are rewritten with ``-`` (and policy patterns follow). Literal secrets
      are moved to :attr:`Migration.secrets` and replaced by ``${NAME}``.
    - ``policies.json``: ``{"policies" | "rules": {pattern: action}, "defaultPolicy" | "default": action}``;
      actions are matched loosely (``require_approval``, ``approve``... -> ``require-approval``).
    - ``replacements.json``: ``{"replacements": [...]}``, a list of
      ``{fake, real, bidirectional, caseSensitive, responseReplacement}``, or a mapping ``{fake: real}``.

    Assumptions: the gateway listens on 127.0.0.1 unless the install had TLS configured (then 0.0.0.0, as
    the original served remote clients); without ``TELEGRAM_ADMIN_CHAT_ID`` (the original's pairing mode)
    no ``[telegram]`` section is written, because this gateway needs a fixed admin chat.
    Anything dropped, skipped or guessed is appended to ``notes``; no note holds a secret or a real value.
    """
    env_path = os.path.join(directory, ".env")
    read = _read_dotenv(env_path)
    found = read is not None
    dotenv = read or {}

    config_dir = os.path.join(directory, "config")
    if os.path.isdir(config_dir):
        for fname in sorted(os.listdir(config_dir)):
            if fname not in _INPUTS:
                notes.append(f"config/{fname}: not an input migrate knows; ignored")

    doc: dict[str, Any] = {"server": _server_section(dotenv, directory, notes)}
    telegram = _telegram_section(dotenv, notes)
    if telegram is not None:
        doc["telegram"] = telegram

    taken = set(dotenv) | {"PORTERO_BEARER_TOKEN"}
    secrets = _Secrets(taken)

    # MCP servers first: their (possibly rewritten) names are needed for the policies.
    renamed: dict[str, str] = {}
    servers: list[dict[str, Any]] = []
    mcps_path = _find_input(directory, "mcps.json", notes)
    if mcps_path is not None:
        found = True
        entries = _mcp_entries(_read_json(mcps_path), notes)
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
            item = _convert_server(raw_name, name, entry, directory, secrets, notes)
            if item is not None:
                servers.append(item)

    policies_path = _find_input(directory, "policies.json", notes)
    if policies_path is not None:
        found = True
        doc["policies"] = _policies_section(_read_json(policies_path), renamed, notes)

    replacements_path = _find_input(directory, "replacements.json", notes)
    if replacements_path is not None:
        found = True
        out_items = _replacements_section(_read_json(replacements_path), notes)
        if out_items:
            doc["replacements"] = out_items

    if servers:
        doc["mcp"] = servers
    if not found:
        raise ConfigError(
            [f"{directory}: no .env, config/*.json or *.json beside it found; is this a Portero install?"]
        )

    referenced: set[str] = set()
    _references(doc, referenced)
    for key in sorted(set(dotenv) - set(_DOTENV_KEYS) - referenced):
        notes.append(
            f".env: {key} is not used by the converted config; ignored (if a server needs it from the "
            "environment, list it in that server's inherit_env)"
        )

    # What `portero check` will say about the result, with the install's .env and the moved secrets.
    try:
        body = _dumps(doc)
        parse_config(body, path="portero.toml", env={**dotenv, **secrets.values})
    except ConfigError as exc:
        notes.extend(f"check: {problem}" for problem in exc.problems)
    return Migration(
        doc=doc, secrets=dict(secrets.values), dotenv_path=env_path if read is not None else None
    )


def _dumps(doc: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(doc)


def render_toml(migration: Migration, *, directory: str, env_out: str | None, notes: list[str]) -> str:
    """The TOML text: a header of comments (every line :func:`comment_safe`), then the document as tomli_w
    writes it. Raises ``RuntimeError`` if the text does not read back as exactly the document."""
    files = []
    if migration.dotenv_path is not None:
        files.append(os.path.abspath(migration.dotenv_path))
    if env_out is not None:
        files.append(os.path.abspath(env_out))
    header = [f"Converted by `portero migrate` from {os.path.abspath(directory)}."]
    if files:
        header.append("The install's secrets are not copied here but referred to as ${NAME}. Run with:")
        header.append("  " + " ".join(f"--env-file {shlex.quote(f)}" for f in files))
    header.append("See the example portero.toml for every key and what it does.")
    header += [f"note: {n}" for n in notes]
    body = _dumps(migration.doc)
    text = "".join(f"# {comment_safe(line)}\n" for line in header) + "\n" + body
    if tomllib.loads(text) != tomllib.loads(body):  # pragma: no cover - comment_safe makes this impossible
        raise RuntimeError("the generated header changed the document")
    return text


def render_env_file(migration: Migration, directory: str) -> str:
    lines = [
        f"# Secrets moved out of {comment_safe(os.path.abspath(directory))} by `portero migrate`.",
        "# Keep this file private (mode 0600); pass it to portero with --env-file.",
    ]
    lines += [env_line(k, v) for k, v in migration.secrets.items()]
    text = "\n".join(lines) + "\n"
    if parse_env_file(text) != migration.secrets:  # pragma: no cover - env_line round-trips each value
        raise RuntimeError("the env file does not read back as the secrets")
    return text


# -------------------------------------------------------------------------------------------- write


def env_path_for(output: str) -> str:
    """Where the moved secrets go: beside ``output``, with ``.env`` for its extension."""
    root, _ext = os.path.splitext(output)
    candidate = root + ".env"
    return candidate if candidate != output else output + ".env"


def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    directory = args.dir
    shown_dir = comment_safe(directory)
    if not os.path.isdir(directory):
        print(f"{shown_dir}: not a directory", file=err)
        return 2
    notes: list[str] = []
    try:
        migration = migrate_install(directory, notes=notes)
    except ConfigError as exc:
        for problem in exc.problems:
            print(comment_safe(problem), file=err)
        return 2
    except (OSError, ValueError) as exc:
        print(comment_safe(f"{directory}: cannot read the install: {exc}"), file=err)
        return 2

    env_out = env_path_for(args.output) if (args.output and migration.secrets) else None
    if migration.secrets and not args.output:
        for note in notes:
            print(f"note: {comment_safe(note)}", file=err)
        print(
            f"{shown_dir}: mcps.json holds literal secrets ({', '.join(migration.secrets)}), which are "
            "not printed. Pass -o PATH: the config goes there, the secrets to an env file beside it (0600)",
            file=err,
        )
        return 2
    try:
        text = render_toml(migration, directory=directory, env_out=env_out, notes=notes)
    except RuntimeError as exc:  # pragma: no cover
        print(f"migrate: {exc}", file=err)
        return 2
    for note in notes:
        print(f"note: {comment_safe(note)}", file=err)
    if not args.output:
        out.write(text)
        return 0

    output = args.output
    fd = create_private_or_say(output, err, comment_safe(output))
    if fd is None:
        return 1
    env_fd = None
    if env_out is not None:
        try:
            env_fd = create_private(env_out)
        except OSError as exc:
            os.close(fd)
            os.unlink(output)
            why = "already exists; not overwriting it" if isinstance(exc, FileExistsError) else exc.strerror
            print(f"{comment_safe(env_out)}: {why} (nothing written)", file=err)
            return 1
        with os.fdopen(env_fd, "w", encoding="utf-8") as f:
            f.write(render_env_file(migration, directory))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    env_files = [p for p in (migration.dotenv_path, env_out) if p is not None]
    flags = "".join(f" --env-file {shlex.quote(p)}" for p in env_files)
    print(f"wrote {comment_safe(output)} (mode 0600)", file=out)
    if env_out is not None:
        print(
            f"wrote {comment_safe(env_out)} (mode 0600): the literal secrets of mcps.json "
            f"({', '.join(migration.secrets)})",
            file=out,
        )
    print(comment_safe(f"check it with: portero check --config {shlex.quote(output)}{flags}"), file=out)
    return 0
