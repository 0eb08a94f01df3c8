"""The checks shared by ``check`` and ``serve``: what a structured configuration must satisfy.

Each check is a pure function that takes a section as :mod:`.model` types it (after
:func:`.load.parse_config` has structured it) and appends one ``<key path>: <what is wrong>`` line per
mistake to ``problems`` instead of raising, so that the user sees *all* of them at once; ``parse_config``
prefixes each line with the file name. The cross-field checks (auth vs host, TLS pairs, unique
names...) run on whatever structured successfully, and the policies and replacements are compiled
into the very :class:`~portero.core.policy.PolicyEngine` and :class:`~portero.core.anonymize.Anonymizer`
that ``serve`` builds, so nothing they refuse passes ``check``. Checks that need the filesystem
(commands on PATH, ``cwd``, TLS files) are not here: they are :mod:`.preflight`. :func:`_warnings`
lists what is valid but probably not what the user wants. How a message shows a key path
(:func:`_join`) and a value (:func:`_describe`) lives here too, and :mod:`.load` words its structuring
errors with them.
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse

import attrs

from ..core.anonymize import Anonymizer, Rule
from ..core.descriptions import MAX_DESCRIPTION
from ..core.net import is_loopback_host
from ..core.policy import PolicyEngine, validate_pattern
from .model import (
    ACTIONS,
    ACTIVITY_MODES,
    AUTH_MODES,
    CHILD_PROTOCOLS,
    DEFAULT_CLIENT,
    GATEWAY_LOG_LEVELS,
    LOG_FORMATS,
    MIN_PAIRING_CODE_LENGTH,
    MIN_TOKEN_LENGTH,
    PIN_MODES,
    REMOTE_AUTH_MODES,
    REMOTE_TRANSPORTS,
    ClientSection,
    ConsoleSection,
    McpServer,
    PinsSection,
    PoliciesSection,
    Replacement,
    ServerSection,
    TelegramSection,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9-]+$")
_SEPARATOR_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


# ------------------------------------------------------------------------------------------- messages


def _describe(value: object) -> str:
    """How a TOML value is shown in a message: strings quoted, tables and arrays by kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, int | float):
        return repr(value)
    return type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    shown = key if _BARE_KEY_RE.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


# ---------------------------------------------------------------------------------- semantic checks


def _check_server(s: ServerSection, problems: list[str], *, has_clients: bool = False) -> None:
    if not s.host.strip():
        problems.append("server.host: must not be empty")
    if not 0 <= s.port <= 65535:
        problems.append(f"server.port: must be between 0 and 65535, got {s.port}")
    if s.auth not in AUTH_MODES:
        problems.append(f'server.auth: expected "bearer" or "none", got {_describe(s.auth)}')
    elif s.auth == "bearer":
        if not s.bearer_token and not has_clients:  # with [[client]] entries, their tokens suffice
            problems.append(
                'server.bearer_token: required when auth = "bearer" and there is no [[client]] '
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))', "
                "or run `portero client add NAME`)"
            )
        elif s.bearer_token and len(s.bearer_token) < MIN_TOKEN_LENGTH:
            problems.append(
                f"server.bearer_token: too short ({len(s.bearer_token)} characters); "
                f"use at least {MIN_TOKEN_LENGTH}"
            )
    elif not is_loopback_host(s.host):
        problems.append(
            f'server.auth: "none" is only allowed when host is a loopback address '
            f"(127.0.0.1, ::1, localhost), not {_describe(s.host)}"
        )
    if s.metrics_token and len(s.metrics_token) < MIN_TOKEN_LENGTH:
        problems.append(
            f"server.metrics_token: too short ({len(s.metrics_token)} characters); "
            f"use at least {MIN_TOKEN_LENGTH}"
        )
    if bool(s.tls_cert) != bool(s.tls_key):
        missing = "tls_key" if s.tls_cert else "tls_cert"
        problems.append(f"server.{missing}: tls_cert and tls_key must be set together (or neither)")
    for index, origin in enumerate(s.allowed_origins):
        if origin != origin.strip() or not re.fullmatch(r"https?://[^/\s]+", origin.rstrip("/")):
            problems.append(
                f'server.allowed_origins[{index}]: expected an origin like "https://example.com" '
                f"(scheme, host and optional port, no path), got {_describe(origin)}"
            )
    if not _SEPARATOR_RE.match(s.tool_separator):
        problems.append(
            "server.tool_separator: must be non-empty and use only letters, digits, '_', '.' and '-', "
            f"got {_describe(s.tool_separator)}"
        )
    if not s.data_dir:
        problems.append("server.data_dir: must not be empty")
    if s.log_level.lower() not in GATEWAY_LOG_LEVELS:
        problems.append(
            f"server.log_level: expected one of {', '.join(GATEWAY_LOG_LEVELS)}, got {_describe(s.log_level)}"
        )
    if s.log_format.lower() not in LOG_FORMATS:
        problems.append(
            f"server.log_format: expected one of {', '.join(LOG_FORMATS)}, got {_describe(s.log_format)}"
        )
    if s.otlp_endpoint and not _is_http_url(s.otlp_endpoint):
        problems.append(
            f'server.otlp_endpoint: expected "" or an http(s) URL like "http://127.0.0.1:4318", '
            f"got {_describe(s.otlp_endpoint)}"
        )
    for key in ("max_body_bytes", "max_message_bytes"):
        if getattr(s, key) <= 0:
            problems.append(f"server.{key}: must be a positive number of bytes")


def _is_http_url(value: str) -> bool:
    try:
        url = urllib.parse.urlsplit(value)
        _ = url.port  # a port that is not a number raises
    except ValueError:
        return False
    return value == value.strip() and url.scheme in ("http", "https") and bool(url.hostname)


def _check_telegram(t: TelegramSection, problems: list[str]) -> None:
    if not t.bot_token.strip():
        problems.append("telegram.bot_token: must not be empty")
    if not re.match(r"^https?://", t.api_base):
        problems.append(f"telegram.api_base: expected an http(s) URL, got {_describe(t.api_base)}")
    # (An admin_chat_id that is there but not a number was reported already, and defaulted to None.)
    bad_chat = any("telegram.admin_chat_id:" in p for p in problems)
    if t.admin_chat_id is None and not t.pairing_code and not bad_chat:
        problems.append(
            "telegram.admin_chat_id: missing required key "
            "(or set pairing_code, and send /pair <code> to the bot)"
        )
    if t.pairing_code and len(t.pairing_code.strip()) < MIN_PAIRING_CODE_LENGTH:
        problems.append(
            f"telegram.pairing_code: must be at least {MIN_PAIRING_CODE_LENGTH} characters (a secret)"
        )
    if t.activity not in ACTIVITY_MODES:
        hint = difflib.get_close_matches(t.activity, ACTIVITY_MODES, n=1)
        suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
        problems.append(
            f"telegram.activity: expected one of {', '.join(ACTIVITY_MODES)}, "
            f"got {_describe(t.activity)}{suffix}"
        )


def _check_pins(p: PinsSection, problems: list[str]) -> None:
    if p.mode not in PIN_MODES:
        hint = difflib.get_close_matches(p.mode, PIN_MODES, n=1)
        suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
        problems.append(f"pins.mode: expected one of {', '.join(PIN_MODES)}, got {_describe(p.mode)}{suffix}")


def _check_console(c: ConsoleSection, problems: list[str]) -> None:
    if not c.approval_timeout > 0:
        problems.append(f"console.approval_timeout: must be a positive duration, got {c.approval_timeout:g}s")
    if not c.session_idle > 0:
        problems.append(f"console.session_idle: must be a positive duration, got {c.session_idle:g}s")
    if not c.session_max > 0:
        problems.append(f"console.session_max: must be a positive duration, got {c.session_max:g}s")


def _check_action(value: str, path: str, problems: list[str]) -> None:
    if value not in ACTIONS:
        hint = difflib.get_close_matches(value, ACTIONS, n=1)
        suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
        problems.append(f"{path}: expected one of {', '.join(ACTIONS)}, got {_describe(value)}{suffix}")


def _check_policies(p: PoliciesSection, problems: list[str]) -> None:
    """Each rule's pattern and action, then the very :class:`PolicyEngine` that ``serve`` builds."""
    before = len(problems)
    _check_action(p.default, "policies.default", problems)
    for pattern, action in p.rules.items():
        if not pattern.strip():
            problems.append("policies.rules: a rule pattern must not be empty")
            continue
        where = _join("policies.rules", pattern)
        error = validate_pattern(pattern)
        if error is not None:
            problems.append(f"{where}: {error}")
        _check_action(action, where, problems)
    if len(problems) == before:
        # Whatever the engine refuses beyond the checks above must not first show up at serve time.
        try:
            PolicyEngine(p.default, dict(p.rules))
        except ValueError as exc:
            problems.append(f"policies: {exc}")


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_client(c: ClientSection, path: str, problems: list[str]) -> None:
    """One ``[[client]]`` entry: its name, its token's hash, its tool globs and its own rules (compiled
    into the very :class:`PolicyEngine` the gateway composes with the global rules)."""
    _check_mcp_name(c.name, path, problems)
    if not _SHA256_RE.match(c.token_sha256.lower()):
        problems.append(
            f"{path}.token_sha256: expected 64 hex digits (the SHA-256 of the token; "
            "`portero client add` writes it)"
        )
    for index, pattern in enumerate(c.tools):
        error = validate_pattern(pattern)
        if error is not None:
            problems.append(f"{path}.tools[{index}]: {error}")
    before = len(problems)
    for pattern, action in c.policy.items():
        where = _join(f"{path}.policy", pattern)
        error = validate_pattern(pattern)
        if error is not None:
            problems.append(f"{where}: {error}")
        _check_action(action, where, problems)
    if len(problems) == before:
        try:
            PolicyEngine("allow", dict(c.policy))
        except ValueError as exc:
            problems.append(f"{path}.policy: {exc}")


def _check_clients(
    clients: list[tuple[int, ClientSection]], server: ServerSection | None, problems: list[str]
) -> None:
    """Names and token hashes are unique across ``[[client]]`` entries; with ``server.bearer_token``
    set, the name "default" is taken by the client that token stands for."""
    names: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for index, c in clients:
        if c.name in names:
            problems.append(
                f"client[{index}].name: duplicate client name {_describe(c.name)} "
                f"(also client[{names[c.name]}])"
            )
        names.setdefault(c.name, index)
        if server is not None and server.bearer_token and c.name == DEFAULT_CLIENT:
            problems.append(
                f'client[{index}].name: "{DEFAULT_CLIENT}" is the client of server.bearer_token; '
                "pick another name"
            )
        digest = c.token_sha256.lower()
        if digest in hashes:
            problems.append(f"client[{index}].token_sha256: the same token as client[{hashes[digest]}]")
        hashes.setdefault(digest, index)


def _check_replacement(r: Replacement, path: str, problems: list[str]) -> None:
    if not r.fake:
        problems.append(f"{path}.fake: must not be empty")
    if not r.real:
        problems.append(f"{path}.real: must not be empty")


def _check_unique_fakes(replacements: list[Replacement], problems: list[str]) -> None:
    """Two ``[[replacements]]`` entries must not share a ``fake`` value."""
    fakes: dict[str, int] = {}
    for index, r in enumerate(replacements):
        if r.fake and r.fake in fakes:
            problems.append(
                f"replacements[{index}].fake: {_describe(r.fake)} is already used by "
                f"replacements[{fakes[r.fake]}]"
            )
        fakes.setdefault(r.fake, index)


def _anonymizer_refuses(rules: list[Rule]) -> bool:
    try:
        Anonymizer(rules)
    except ValueError:
        return True
    return False


def _check_anonymizer(entries: list[tuple[int, Replacement]], problems: list[str]) -> None:
    """Build the :class:`Anonymizer` that ``serve`` builds, and name every replacement it refuses.

    ``entries`` are (index, replacement) pairs that passed the simpler checks (non-empty sides, no fake
    used twice). Rules are added one at a time; a rule the anonymizer refuses next to the ones accepted so
    far is reported against the first accepted rule it clashes with, on the side (``fake`` or ``real``)
    where they clash. Messages never show a real value.
    """
    before = len(problems)
    if not _anonymizer_refuses([r for _, r in entries]):
        return  # the common case: one build, not one per rule (1,000 rules used to take 15-40 s)
    accepted: list[tuple[int, Rule]] = []
    for index, rule in entries:
        if not _anonymizer_refuses([*(r for _, r in accepted), rule]):
            accepted.append((index, rule))
            continue
        path = f"replacements[{index}]"
        partner = next(((j, r) for j, r in accepted if _anonymizer_refuses([r, rule])), None)
        if partner is None:  # only the set as a whole is ambiguous
            problems.append(f"{path}: ambiguous together with the replacements before it")
            continue
        j, other = partner
        # Which side clashes: try the fakes with distinct stand-ins for the reals.
        fakes_only = [
            attrs.evolve(other, real="\0portero-a"),
            attrs.evolve(rule, real="\0portero-b"),
        ]
        loose = "" if other.case_sensitive and rule.case_sensitive else " (case_sensitive = false)"
        if _anonymizer_refuses(fakes_only):
            problems.append(
                f"{path}.fake: {_describe(rule.fake)} equals replacements[{j}].fake ignoring case{loose}: "
                "the gateway could not tell which real value a client's text stands for"
            )
        elif rule.real == other.real:
            problems.append(
                f"{path}.real: the same real value as replacements[{j}].real: a response holding it "
                "could not be turned back into one fake"
            )
        else:
            problems.append(
                f"{path}.real: equals replacements[{j}].real ignoring case{loose}: a response holding it "
                "could not be turned back into one fake"
            )
    if len(problems) == before:
        try:
            Anonymizer.from_config([r for _, r in entries])
        except ValueError as exc:
            problems.append(f"replacements: {exc}")


def _check_mcp_name(name: str, path: str, problems: list[str]) -> None:
    if not _NAME_RE.match(name):
        problems.append(f"{path}.name: use only letters, digits and '-', got {_describe(name)}")


def _check_unique_name(m: McpServer, index: int, seen: dict[str, int], problems: list[str]) -> None:
    """``[[mcp]]`` names must be unique; ``seen`` maps each name to the index of its first entry."""
    if m.name in seen:
        problems.append(
            f"mcp[{index}].name: duplicate server name {_describe(m.name)} (also mcp[{seen[m.name]}])"
        )
    else:
        seen[m.name] = index


def _check_mcp(m: McpServer, path: str, problems: list[str]) -> None:
    _check_mcp_name(m.name, path, problems)
    if m.url:
        _check_remote(m, path, problems)
    elif not m.command.strip():
        what = "must not be empty" if m.command else "missing"
        problems.append(f"{path}.command: {what} (a local server needs `command`, a remote one `url`)")
    else:
        for key in _REMOTE_KEYS:
            if getattr(m, key) != getattr(_LOCAL_DEFAULTS, key):
                problems.append(f"{path}.{key}: only for a remote server (with `url`), not with `command`")
    for key in m.env:
        if not key or "=" in key or "\0" in key:
            problems.append(f"{_join(path + '.env', key)}: invalid environment variable name")
    if m.protocol not in CHILD_PROTOCOLS:
        choices = ", ".join(CHILD_PROTOCOLS)
        problems.append(f"{path}.protocol: must be one of {choices}, got {_describe(m.protocol)}")
    for index, name in enumerate(m.required_env):
        if not _VAR_NAME_RE.match(name):
            problems.append(
                f"{path}.required_env[{index}]: invalid environment variable name {_describe(name)}"
            )
    for index, name in enumerate(m.inherit_env):
        if not _VAR_NAME_RE.match(name):
            problems.append(
                f"{path}.inherit_env[{index}]: invalid environment variable name {_describe(name)} "
                "(letters, digits and '_', not starting with a digit)"
            )
    for tool, text in m.descriptions.items():
        where = _join(path + ".descriptions", tool)
        if not tool.strip():
            problems.append(f"{where}: a tool name must not be empty")
        elif not text.strip():
            problems.append(f"{where}: the description must not be empty (leave the key out instead)")
        elif len(text) > MAX_DESCRIPTION:
            problems.append(f"{where}: {len(text)} characters, more than {MAX_DESCRIPTION}")


_LOCAL_DEFAULTS = McpServer(name="-", command="-")
_REMOTE_KEYS = ("transport", "auth", "headers", "token", "client_id", "client_secret", "scopes", "ca_file")
_REMOTE_SCHEMES = {"http", "https", "ws", "wss"}


def _check_remote(m: McpServer, path: str, problems: list[str]) -> None:
    """A remote server: a URL Portero can reach, a transport its scheme allows, credentials that fit."""
    if m.command:
        problems.append(f"{path}: has both `command` and `url`; a server is one or the other")
    for key in ("args", "env", "cwd", "inherit_env", "per_session", "protocol"):
        if getattr(m, key) != getattr(_LOCAL_DEFAULTS, key):
            problems.append(f"{path}.{key}: only for a local server (with `command`), not with `url`")
    url = urllib.parse.urlsplit(m.url)
    scheme = url.scheme.lower()
    if scheme not in _REMOTE_SCHEMES or not url.hostname:
        problems.append(
            f"{path}.url: {_describe(m.url)} is not an http://, https://, ws:// or wss:// URL with a host"
        )
    elif url.username or url.password:
        problems.append(f"{path}.url: put credentials in `token` or `headers`, not in the URL")
    if m.transport not in REMOTE_TRANSPORTS:
        choices = ", ".join(REMOTE_TRANSPORTS)
        problems.append(f"{path}.transport: must be one of {choices}, got {_describe(m.transport)}")
    elif scheme in ("ws", "wss") and m.transport not in ("auto", "websocket"):
        problems.append(f"{path}.transport: {m.transport!r} needs an http(s):// url; ws(s):// is WebSocket")
    elif scheme in ("http", "https") and m.transport == "websocket":
        problems.append(f"{path}.transport: 'websocket' needs a ws:// or wss:// url")
    if m.auth not in REMOTE_AUTH_MODES:
        choices = ", ".join(REMOTE_AUTH_MODES)
        problems.append(f"{path}.auth: must be one of {choices}, got {_describe(m.auth)}")
    elif m.auth == "bearer" and not m.token:
        problems.append(f'{path}.token: auth = "bearer" needs a token (e.g. token = "${{LINEAR_TOKEN}}")')
    elif m.auth != "bearer" and m.token:
        problems.append(f'{path}.token: only used with auth = "bearer"')
    if m.auth != "oauth":
        for key in ("client_id", "client_secret", "scopes"):
            if getattr(m, key):
                problems.append(f'{path}.{key}: only used with auth = "oauth"')
    elif scheme in ("ws", "wss"):
        problems.append(f"{path}.auth: oauth is for http(s):// servers")
    for key, value in m.headers.items():
        if not _HEADER_NAME_RE.match(key) or "\n" in value or "\r" in value or "\0" in value:
            problems.append(f"{_join(path + '.headers', key)}: not a valid HTTP header")
        elif key.lower() in _RESERVED_HEADERS:
            problems.append(f"{_join(path + '.headers', key)}: set by Portero itself")
        elif key.lower() == "authorization" and m.auth != "none":
            problems.append(f"{_join(path + '.headers', key)}: auth = {m.auth!r} sets Authorization itself")
    if m.connect_timeout <= 0:
        problems.append(f"{path}.connect_timeout: must be positive")


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the transports own: the session, the protocol version, framing, and the server's own token.
_RESERVED_HEADERS = {
    "mcp-session-id", "mcp-protocol-version", "content-type", "content-length",
    "accept", "host", "connection", "transfer-encoding", "last-event-id", "upgrade",
    "sec-websocket-protocol", "sec-websocket-key", "sec-websocket-version",
}  # fmt: skip


# ----------------------------------------------------------------------------------------- warnings


def _warnings(
    server: ServerSection,
    telegram: TelegramSection | None,
    policies: PoliciesSection,
    servers: list[McpServer],
    *,
    clients: int = 0,
    console: bool = False,
) -> list[str]:
    """Things that are valid but probably not what the user wants, as far as the file alone tells."""
    out: list[str] = []
    for m in servers:
        if not m.enabled:
            out.append(f"mcp server {m.name!r} is disabled (enabled = false)")
        elif m.skip_reason:
            out.append(f"mcp server {m.name!r} is skipped: {m.skip_reason}")
        if server.tool_separator in m.name:
            out.append(
                f"mcp server {m.name!r} contains the tool separator {server.tool_separator!r}; "
                "exposed names may be ambiguous"
            )
    running = [m for m in servers if m.runnable]
    if not running:
        out.append("no mcp server will start")
    unprefixed = [m.name for m in running if not m.prefix]
    if len(unprefixed) > 1:
        out.append(
            f"servers {', '.join(repr(n) for n in unprefixed)} all have prefix = false: "
            "if two expose the same name, the first in the file wins"
        )
    actions = {policies.default, *policies.rules.values()}
    if telegram is None and not console and "require-approval" in actions:
        out.append("no [telegram] section: calls that require approval will be denied")
    names = {m.name for m in servers}
    for pattern in policies.rules:
        head, slash, _tail = pattern.partition("/")
        if slash and "*" not in head and head not in names:
            out.append(f"policies.rules: {pattern!r} names no configured server")
        elif not slash and "*" not in pattern and server.tool_separator in pattern:
            out.append(
                f"policies.rules: {pattern!r} looks like an exposed name; rules match canonical names "
                'such as "server/tool"'
            )
    if server.auth == "bearer" and "change-me" in server.bearer_token.lower():
        out.append("server.bearer_token is a placeholder; set a secret token (e.g. PORTERO_BEARER_TOKEN)")
    if server.auth == "none":
        out.append('auth = "none": anyone who can reach the port can use every tool')
        if clients:
            out.append('auth = "none": the [[client]] entries and their tokens are not used')
    if not server.tls and not is_loopback_host(server.host):
        out.append(
            f"listening on {server.host} without TLS: the bearer token crosses the network in clear text"
        )
    return out
