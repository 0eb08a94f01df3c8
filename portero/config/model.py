"""The configuration's typed sections: frozen attrs objects, one per TOML table, and the errors.

This module only describes the shape of a configuration: reading a file into these objects is
:mod:`.load`, and checking them is :mod:`.validate`. It imports neither.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..core.anonymize import Rule as Replacement
from ..core.pins import MODES as PIN_MODES  # [pins] mode: one list, the pure module's
from ..core.policy import ACTIONS  # one list of policy actions, the engine's

__all__ = [
    "ACTIONS",
    "PIN_MODES",
    "ClientSection",
    "Config",
    "ConsoleSection",
    "DEFAULT_CLIENT",
    "ConfigError",
    "McpServer",
    "PinsSection",
    "PoliciesSection",
    "Replacement",
    "ServerSection",
    "TelegramSection",
    "UnsetVariableError",
]

# The gateway's own log levels ([server].log_level); not MCP's eight (gateway.router.MCP_LOG_LEVELS).
GATEWAY_LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # [server].log_format
AUTH_MODES = ("bearer", "none")
# A remote [[mcp]] server's transport and how Portero authenticates to it.
REMOTE_TRANSPORTS = ("auto", "streamable-http", "sse", "websocket")
REMOTE_AUTH_MODES = ("none", "bearer", "oauth")
CHILD_PROTOCOLS = ("handshake", "auto")  # [[mcp]].protocol
ACTIVITY_MODES = ("off", "batched", "all")  # [telegram].activity
MIN_PAIRING_CODE_LENGTH = 8
MIN_TOKEN_LENGTH = 16


# --------------------------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """The configuration is unusable. ``problems`` holds one human-readable line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class UnsetVariableError(KeyError):
    """``${NAME}`` without a default refers to a variable that is not set. ``name`` is the variable."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)

    def __str__(self) -> str:
        return f"${{{self.name}}} is not set"


# ------------------------------------------------------------------------------------------ the model


def _duration(**kwargs: Any) -> Any:
    """An attrs field holding seconds, written in the file as ``"2h30m"`` or an integer."""
    return attrs.field(metadata={"duration": True}, **kwargs)


@attrs.frozen
class ServerSection:
    host: str = "127.0.0.1"
    port: int = 8443
    bearer_token: str = attrs.field(default="", repr=False)
    # A second token that opens only GET /metrics (for a Prometheus scraper); the bearer token does too.
    metrics_token: str = attrs.field(default="", repr=False)
    auth: str = "bearer"
    tls_cert: str = ""
    tls_key: str = ""
    allowed_origins: tuple[str, ...] = ()
    tool_separator: str = "__"
    data_dir: str = "data"
    log_level: str = "info"
    log_file: str = ""
    log_format: str = "text"  # "text" | "json" (one JSON object per line)
    # OTLP/HTTP collector base URL for traces (portero[otel]); "" = OTEL_EXPORTER_OTLP_ENDPOINT or off.
    otlp_endpoint: str = ""
    max_body_bytes: int = 4 * 1024 * 1024
    max_message_bytes: int = 32 * 1024 * 1024
    sse_keepalive: float = _duration(default=15.0)
    session_idle_timeout: float = _duration(default=3600.0)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


@attrs.frozen
class TelegramSection:
    bot_token: str = attrs.field(repr=False)
    # None: no admin chat in the config; the first chat that sends ``/pair <pairing_code>`` becomes it.
    admin_chat_id: int | None = None
    api_base: str = "https://api.telegram.org"
    approval_timeout: float = _duration(default=120.0)
    max_grant: float = _duration(default=86400.0)
    pairing_code: str = attrs.field(default="", repr=False)
    activity: str = "off"  # ACTIVITY_MODES: the activity feed of allowed, denied and refused calls
    activity_interval: float = _duration(default=60.0)  # at most one batched feed message per interval


@attrs.frozen
class PoliciesSection:
    default: str = "allow"
    rules: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ClientSection:
    """One ``[[client]]`` entry: a client with its own token (stored as its SHA-256 only), the tools it
    may see (globs over canonical names; all by default) and policy rules that apply to it first."""

    name: str
    token_sha256: str = attrs.field(repr=False)
    tools: tuple[str, ...] = ("*",)
    policy: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class PinsSection:
    """``[pins]``: ``approve`` quarantines new and changed tool definitions until the admin approves them;
    ``trust-first`` trusts first sight and quarantines changes only; ``off`` pins nothing. A config without
    ``[pins]`` gets ``trust-first``, so an existing setup keeps every tool it has; the example config (and
    ``portero init``) write ``approve``."""

    mode: str = "trust-first"


@attrs.frozen
class ConsoleSection:
    """``[console]``: the web console at ``/console`` on the gateway's own port (off by default). Its
    password is not in the file: ``portero console passwd`` keeps a scrypt hash of it in the database."""

    enabled: bool = False
    # How long a call waits for a decision when there is no [telegram] (with it, its approval_timeout).
    approval_timeout: float = _duration(default=120.0)
    # A console login lasts this long without a request, and at most session_max in all.
    session_idle: float = _duration(default=1800.0)
    session_max: float = _duration(default=43200.0)


# The client that `server.bearer_token` stands for: every tool, no rules of its own.
DEFAULT_CLIENT = "default"


@attrs.frozen
class McpServer:
    """One ``[[mcp]]`` entry: a local process (``command``) or a remote server (``url``)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict, repr=False)  # often holds tokens
    cwd: str = ""
    prefix: bool = True
    required_env: tuple[str, ...] = ()
    call_timeout: float = _duration(default=60.0)
    enabled: bool = True
    # One child process per client session (exact attribution of the child's own messages),
    # besides the shared one that serves listings. Costs a process per session.
    per_session: bool = False
    # "handshake" (default): the initialize handshake, which every server speaks. "auto": ask the
    # server (server/discover) whether it speaks the stateless era (2026-07-28) and use it if so --
    # then its input_required results reach clients; but its tools can no longer ask a client
    # anything in the middle of a call. Local servers only.
    protocol: str = "handshake"
    # Names of the gateway's environment variables this server also gets (besides PATH, HOME,
    # LANG, TZ, TMPDIR and the like); its own `env` comes on top.
    inherit_env: tuple[str, ...] = ()
    # Tool name (as the server names it) -> the description clients see instead of the server's own
    # (to replace a poisoned or bloated one). Pins still hash the server's original definition.
    descriptions: dict[str, str] = attrs.field(factory=dict)
    # -- remote servers (instead of command/args) --
    url: str = ""  # http(s):// for Streamable HTTP or legacy SSE, ws(s):// for WebSocket
    transport: str = "auto"  # REMOTE_TRANSPORTS; auto: Streamable HTTP, falling back to legacy SSE
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)  # static, may hold credentials
    auth: str = "none"  # REMOTE_AUTH_MODES
    token: str = attrs.field(default="", repr=False)  # auth = "bearer": sent as Authorization
    # auth = "oauth": a pre-registered client (else Client ID Metadata Document or dynamic registration)
    client_id: str = ""
    client_secret: str = attrs.field(default="", repr=False)
    scopes: tuple[str, ...] = ()
    ca_file: str = ""  # a CA bundle trusted besides the system's (TLS verification stays on)
    connect_timeout: float = _duration(default=10.0)
    # Not a TOML key: set by parse_config when a required_env variable is unset or empty.
    skip_reason: str | None = None

    @property
    def remote(self) -> bool:
        return bool(self.url)

    @property
    def runnable(self) -> bool:
        """True when the gateway should start this server."""
        return self.enabled and self.skip_reason is None


@attrs.frozen
class Config:
    server: ServerSection
    telegram: TelegramSection | None
    policies: PoliciesSection
    replacements: tuple[Replacement, ...]
    mcp: tuple[McpServer, ...]
    path: str
    warnings: tuple[str, ...] = ()
    clients: tuple[ClientSection, ...] = ()  # the [[client]] entries
    pins: PinsSection = PinsSection()  # [pins]
    console: ConsoleSection = ConsoleSection()  # [console]
