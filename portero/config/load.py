"""Reading the configuration file: one TOML document turned into the frozen attrs objects of :mod:`.model`.

Everything here is pure: no trio, no clock, and no reads of ``os.environ`` -- callers pass the environment
in as a mapping (``serve`` and ``check`` pass the process environment merged with an ``--env-file``).
The only I/O is in :func:`load_config`, :func:`load_data_dir` and :func:`read_env_file`, which read the
file they are given, and in the :mod:`.preflight` checks that ``load_config(..., preflight=True)`` adds.

Parsing happens in four steps, and every step keeps going after a mistake so that the user sees *all* of
them at once, each as ``<file>: <key path>: <what is wrong>``:

1. ``tomllib`` parses the text (a syntax error stops here: there is nothing to walk).
2. ``${VAR}`` / ``${VAR:-default}`` is expanded in every string value. An ``[[mcp]]`` entry whose
   ``required_env`` is not satisfied (or that has ``enabled = false``) is *skipped*: unresolved variables
   inside it are left as they are rather than reported, so an example config can mention credentials that
   are not set yet.
3. Each section is structured separately with a strict cattrs converter. An unknown key is reported (with
   a "did you mean") and left out, and the rest of its table is still structured and checked. No silent
   ``"8443"`` -> ``8443`` coercion: a string stands for an integer or a boolean only when the TOML value
   contained ``${`` (an interpolated ``"${PORT}"`` can only produce a string).
4. The checks of :mod:`.validate` run on whatever structured successfully; with ``preflight=True``,
   :func:`load_config` also runs the filesystem checks of :mod:`.preflight` in the same pass.

Relative paths (``data_dir``, ``log_file``, ``tls_cert``, ``tls_key``, ``[[mcp]].cwd`` and
``[[mcp]].ca_file``) are resolved against the directory of the config file, so the gateway behaves
the same whatever its working directory (systemd starts services in ``/``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from ..durations import parse_duration
from .model import (
    ClientSection,
    Config,
    ConfigError,
    ConsoleSection,
    McpServer,
    PinsSection,
    PoliciesSection,
    Replacement,
    ServerSection,
    TelegramSection,
    UnsetVariableError,
)
from .validate import (
    _VAR_NAME_RE,
    _check_anonymizer,
    _check_client,
    _check_clients,
    _check_console,
    _check_mcp,
    _check_mcp_name,
    _check_pins,
    _check_policies,
    _check_replacement,
    _check_server,
    _check_telegram,
    _check_unique_fakes,
    _check_unique_name,
    _describe,
    _join,
    _warnings,
)

__all__ = [
    "default_config_path",
    "interpolate",
    "load_config",
    "load_data_dir",
    "parse_config",
    "parse_env_file",
    "read_env_file",
]

_TOP_LEVEL_KEYS = ("server", "telegram", "policies", "replacements", "mcp", "client", "pins", "console")


class _Invalid(Exception):
    """Raised by our structure hooks; the message is shown to the user as it is."""


class _Interpolated(str):
    """A string from a TOML value that contained ``${``: the only kind of string that may stand for an
    integer or a boolean (``port = "${PORT}"`` cannot be written any other way). The structure hooks turn
    it back into a plain ``str``."""

    __slots__ = ()


# The hook that :func:`load_config` plugs in for the filesystem checks (see :mod:`.preflight`).
_FileCheck = Callable[[ServerSection | None, Iterable[tuple[int, McpServer]], Mapping[str, str]], list[str]]


# ------------------------------------------------------------------------------------- small parsers

_INTERPOLATION_RE = re.compile(r"\$(?:\$|\{([^{}]*)\})")


def interpolate(text: str, env: Mapping[str, str], *, strict: bool = True) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``text``; ``$$`` is a literal ``$``.

    ``${VAR:-default}`` uses the default when VAR is unset *or empty* (as in the shell). A ``$`` not followed
    by ``{`` or ``$`` is kept as it is. Raises :class:`UnsetVariableError` (a ``KeyError``) naming the first
    variable that is unset without a default, or ``ValueError`` for a malformed ``${...}``.
    With ``strict=False`` an unset variable leaves its ``${...}`` text in place instead.
    """

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if body is None:  # "$$"
            return "$"
        name, sep, default = body.partition(":-")
        if not _VAR_NAME_RE.match(name):
            raise ValueError(f"invalid variable reference ${{{body}}}")
        value = env.get(name)
        if sep:
            return value if value else default
        if value is None:
            if strict:
                raise UnsetVariableError(name)
            return match.group(0)
        return value

    result = _INTERPOLATION_RE.sub(replace, text)
    if strict and "${" in _INTERPOLATION_RE.sub("", text):
        raise ValueError('unterminated "${" (write "$$" for a literal "$")')
    return result


def parse_env_file(text: str, *, path: str = "<env>") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines the way systemd's ``EnvironmentFile=`` does.

    Blank lines and lines starting with ``#`` or ``;`` are ignored; an ``export`` prefix is allowed; a value
    may be wrapped in single quotes (taken literally) or double quotes (``\\"``, ``\\\\``, ``\\n`` and
    ``\\$`` are unescaped); an unquoted value is stripped and a trailing backslash continues it on the next
    line. ``#`` after a value is part of the value, as in systemd. Raises :class:`ConfigError` naming each bad
    line by its number (and at most its key): the content of an env file is never repeated in a message.
    """
    result: dict[str, str] = {}
    problems: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        lineno = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _VAR_NAME_RE.match(key):
            # Never the line itself: an env file holds secrets, and errors end up in logs.
            problems.append(
                f"{path}:{lineno}: expected KEY=VALUE "
                "(KEY: letters, digits and '_', not starting with a digit)"
            )
            continue
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            # A quoted value may span lines until its closing quote.
            while not _closes(value, quote) and index < len(lines):
                value += "\n" + lines[index]
                index += 1
            value = value.rstrip()
            if not _closes(value, quote):
                problems.append(f"{path}:{lineno}: {key}: missing closing {quote}")
                continue
            inner = value[1:-1]
            if quote == '"':
                inner = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), inner)
            value = inner
        else:
            while value.endswith("\\") and index < len(lines):
                value = value[:-1] + lines[index].strip()
                index += 1
        result[key] = value
    if problems:
        raise ConfigError(problems)
    return result


def _closes(value: str, quote: str) -> bool:
    if len(value) < 2 or not value.endswith(quote):
        return False
    if quote == "'":
        return True
    # The closing double quote must not be escaped.
    backslashes = len(value[1:-1]) - len(value[1:-1].rstrip("\\"))
    return backslashes % 2 == 0


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse an environment file (see :func:`parse_env_file`); a missing file is a ConfigError."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read env file: {exc.strerror or exc}"]) from None
    return parse_env_file(text, path=name)


def default_config_path(env: Mapping[str, str]) -> str:
    """``$PORTERO_CONFIG`` when set and non-empty, else ``./portero.toml``."""
    return env.get("PORTERO_CONFIG") or "./portero.toml"


# ----------------------------------------------------------------------------------- the converter


def _structure_str(value: object, _type: object) -> str:
    if isinstance(value, str):
        return str(value)  # a plain str, also for an _Interpolated one
    if isinstance(value, dict):
        raise _Invalid(f"expected a string, got {_describe(value)} (quote keys that contain dots)")
    raise _Invalid(f"expected a string, got {_describe(value)}")


def _structure_int(value: object, _type: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        # An interpolated "${PORT}" can only be a string: accept a number there, and only there.
        if isinstance(value, _Interpolated):
            return int(value)
        raise _Invalid(f"expected an integer, got {_describe(value)} (write {value.strip()} without quotes)")
    raise _Invalid(f"expected an integer, got {_describe(value)}")


def _structure_bool(value: object, _type: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        if isinstance(value, _Interpolated):
            return value.strip().lower() == "true"
        raise _Invalid(
            f"expected true or false, got {_describe(value)} (write {value.strip().lower()} without quotes)"
        )
    raise _Invalid(f"expected true or false, got {_describe(value)}")


def _structure_duration(value: object, _type: object) -> float:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _check_strings(items: list[tuple[int | str, object]], container: type) -> None:
    """Raise one grouped error naming every element of an array or table that is not a string."""
    errors = []
    for key, item in items:
        if not isinstance(item, str):
            if isinstance(item, dict):
                exc = _Invalid(f"expected a string, got {_describe(item)} (quote keys that contain dots)")
            else:
                exc = _Invalid(f"expected a string, got {_describe(item)}")
            exc.__notes__ = [IterableValidationNote(f"@ {key!r}", key, str)]
            errors.append(exc)
    if errors:
        raise cattrs.IterableValidationError("invalid elements", errors, container)


_T = TypeVar("_T")


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(bool, _structure_bool)

    def tuple_hook(value: object, _type: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise _Invalid(f"expected an array of strings, got {_describe(value)}")
        _check_strings(list(enumerate(value)), tuple)
        return tuple(str(v) for v in value)

    def dict_hook(value: object, _type: object) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _Invalid(f"expected a table of strings, got {_describe(value)}")
        _check_strings(list(value.items()), dict)
        return {str(k): str(v) for k, v in value.items()}

    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], tuple_hook)
    converter.register_structure_hook_func(lambda t: t == dict[str, str], dict_hook)

    for cls in (
        ServerSection,
        TelegramSection,
        PoliciesSection,
        Replacement,
        McpServer,
        ClientSection,
        PinsSection,
        ConsoleSection,
    ):
        overrides: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.metadata.get("duration"):
                overrides[field.name] = override(struct_hook=_structure_duration)
            if field.name == "skip_reason":
                overrides[field.name] = override(omit=True)
        converter.register_structure_hook(
            cls, make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **overrides)
        )
    return converter


_CONVERTER = _make_converter()


def _flatten_structure_error(exc: BaseException, path: str, out: list[str]) -> None:
    """Turn a (nested) cattrs validation error into ``key.path: message`` lines."""
    if isinstance(exc, ForbiddenExtraKeysError):  # pragma: no cover - _structure removes them first
        known = _known_keys(exc.cl)
        for key in sorted(exc.extra_fields):
            hint = difflib.get_close_matches(key, known, n=1)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            out.append(f"{_join(path, key)}: unknown key{suffix}")
        return
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    sub_path = _join(path, note.name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = _join(path, note.index)
            _flatten_structure_error(sub, sub_path, out)
        return
    if isinstance(exc, KeyError):
        out.append(f"{path}: missing required key")
    elif isinstance(exc, _Invalid):
        out.append(f"{path}: {exc}")
    else:  # pragma: no cover - a hook we did not write; still say where
        out.append(f"{path}: {exc}")


def _known_keys(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.name != "skip_reason"]


def _structure(value: object, cls: type[_T], path: str, problems: list[str]) -> _T | None:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a table, got {_describe(value)}")
        return None
    # Unknown keys are reported here and left out, so the table's other keys are still checked.
    known = _known_keys(cls)
    for key in value:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            problems.append(f"{_join(path, key)}: unknown key{suffix}")
    value = {k: v for k, v in value.items() if k in known}
    try:
        return _CONVERTER.structure(value, cls)
    except Exception as exc:  # cattrs raises groups of errors; we flatten them all
        found: list[str] = []
        _flatten_structure_error(exc, path, found)
        problems.extend(found or [f"{path}: {exc}"])
        bad = _failed_keys(exc)
    # Best effort for the checks that follow (cross-field, filesystem): the table without its bad keys,
    # which take their defaults. Its mistakes are already reported, so the config is refused anyway.
    if not bad or not bad <= set(value):
        return None
    try:
        return _CONVERTER.structure({k: v for k, v in value.items() if k not in bad}, cls)
    except Exception:  # a required key was among the bad ones
        return None


def _failed_keys(exc: BaseException) -> set[str]:
    """The top-level keys a cattrs error group names."""
    keys: set[str] = set()
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    keys.add(note.name)
    return keys


# -------------------------------------------------------------------------------------- interpolation


def _interpolate_tree(
    value: Any, path: str, env: Mapping[str, str], failed: dict[str, str], *, strict: bool
) -> Any:
    """Copy of ``value`` with every string interpolated.

    A string that cannot be expanded is kept as it is and its key path and message go into ``failed``
    (only when ``strict``), so later checks on the same key can stay quiet instead of piling up.
    """
    if isinstance(value, str):
        try:
            result = interpolate(value, env, strict=strict)
        except (UnsetVariableError, ValueError) as exc:
            if strict:
                failed[path] = str(exc)
            return value
        return _Interpolated(result) if "${" in value else result
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, _join(path, k), env, failed, strict=strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, _join(path, i), env, failed, strict=strict) for i, v in enumerate(value)]
    return value


def _skip_reason(entry: Any, env: Mapping[str, str]) -> str | None:
    """Why an ``[[mcp]]`` entry will not start, judged from its raw table (before structuring)."""
    if not isinstance(entry, dict):
        return None
    required = entry.get("required_env", ())
    if not isinstance(required, list):
        return None
    missing = [name for name in required if isinstance(name, str) and not env.get(name)]
    if not missing:
        return None
    if len(missing) == 1:
        return f"{missing[0]} is not set"
    return f"{', '.join(missing)} are not set"


# ------------------------------------------------------------------------------------------ parsing


def _resolve(base_dir: str, value: str, env: Mapping[str, str]) -> str:
    if not value:
        return value
    if value == "~" or value.startswith("~/"):
        home = env.get("HOME")
        if home:
            value = home + value[1:]
    return os.path.normpath(os.path.join(base_dir, value))


def parse_config(text: str, *, path: str, env: Mapping[str, str]) -> Config:
    """Parse and validate a config document; raise :class:`ConfigError` listing every problem found.

    ``path`` names the file in messages and anchors relative paths; ``env`` supplies ``${VAR}`` values and
    decides which ``required_env`` servers are skipped. Pure: nothing on disk is looked at (see
    :func:`load_config` with ``preflight=True`` for that).
    """
    return _parse_config(text, path=path, env=env, check_files=None)


def _resolve_paths(m: McpServer, base_dir: str, env: Mapping[str, str]) -> McpServer:
    """An ``[[mcp]]`` entry with its ``cwd`` and ``ca_file`` anchored at the config file's directory."""
    if m.cwd:
        m = attrs.evolve(m, cwd=_resolve(base_dir, m.cwd, env))
    if m.ca_file:
        m = attrs.evolve(m, ca_file=_resolve(base_dir, m.ca_file, env))
    return m


def _under(path: str, failed: Mapping[str, str]) -> bool:
    """Whether an interpolation failed at ``path`` or below it."""
    return any(key == path or key.startswith((path + ".", path + "[")) for key in failed)


def _parse_config(text: str, *, path: str, env: Mapping[str, str], check_files: _FileCheck | None) -> Config:
    problems: list[str] = []
    warnings: list[str] = []

    failed: dict[str, str] = {}  # key path -> interpolation problem

    def fail() -> ConfigError:
        # A key whose ${VAR} failed is reported once, not again as "too short" or "must not be empty".
        lines = [f"{key}: {message}" for key, message in failed.items()]
        lines += [p for p in problems if not any(p.startswith(f"{key}:") for key in failed)]
        return ConfigError([f"{path}: {line}" for line in lines])

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"invalid TOML: {exc}")
        raise fail() from None

    for key in raw:
        if key not in _TOP_LEVEL_KEYS:
            hint = difflib.get_close_matches(key, _TOP_LEVEL_KEYS, n=1)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            problems.append(f"{_join('', key)}: unknown key{suffix}")

    # Interpolate, section by section (each [[mcp]] entry on its own, so skipped ones can be lenient).
    sections: dict[str, Any] = {}
    for key in ("server", "telegram", "policies", "replacements", "client", "pins", "console"):
        if key in raw:
            sections[key] = _interpolate_tree(raw[key], key, env, failed, strict=True)

    raw_mcp = raw.get("mcp", [])
    mcp_entries: list[tuple[Any, str | None]] = []
    if isinstance(raw_mcp, list):
        for index, entry in enumerate(raw_mcp):
            reason = _skip_reason(entry, env)
            disabled = isinstance(entry, dict) and entry.get("enabled") is False
            lenient = reason is not None or disabled
            value = _interpolate_tree(entry, f"mcp[{index}]", env, failed, strict=not lenient)
            mcp_entries.append((value, reason))
    else:
        problems.append(f"mcp: expected an array of tables ([[mcp]]), got {_describe(raw_mcp)}")

    # Structure.
    server = _structure(sections.get("server", {}), ServerSection, "server", problems)
    telegram = None
    if "telegram" in sections:
        telegram = _structure(sections["telegram"], TelegramSection, "telegram", problems)
    policies = _structure(sections.get("policies", {}), PoliciesSection, "policies", problems)
    pins = _structure(sections.get("pins", {}), PinsSection, "pins", problems)
    if pins is not None:
        _check_pins(pins, problems)
    console = _structure(sections.get("console", {}), ConsoleSection, "console", problems)
    if console is not None:
        _check_console(console, problems)

    replacements: list[Replacement] = []
    # The replacements the anonymizer is built from: those with nothing already wrong with them.
    for_anonymizer: list[tuple[int, Replacement]] = []
    fakes_seen: set[str] = set()
    raw_replacements = sections.get("replacements", [])
    if isinstance(raw_replacements, list):
        for index, entry in enumerate(raw_replacements):
            where = f"replacements[{index}]"
            replacement = _structure(entry, Replacement, where, problems)
            if replacement is not None:
                before = len(problems)
                _check_replacement(replacement, where, problems)
                replacements.append(replacement)
                if (
                    len(problems) == before
                    and not _under(where, failed)
                    and replacement.fake not in fakes_seen
                ):
                    for_anonymizer.append((index, replacement))
                fakes_seen.add(replacement.fake)
    else:
        problems.append(
            f"replacements: expected an array of tables ([[replacements]]), got {_describe(raw_replacements)}"
        )

    servers: list[tuple[int, McpServer]] = []
    seen: dict[str, int] = {}
    for index, (entry, reason) in enumerate(mcp_entries):
        item = _structure(entry, McpServer, f"mcp[{index}]", problems)
        if item is None:
            # Still report a bad name, so one broken entry doesn't hide its other mistakes.
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str):
                _check_mcp_name(name, f"mcp[{index}]", problems)
            continue
        _check_mcp(item, f"mcp[{index}]", problems)
        _check_unique_name(item, index, seen, problems)
        if reason is not None:
            item = attrs.evolve(item, skip_reason=reason)
        servers.append((index, item))

    clients: list[tuple[int, ClientSection]] = []
    raw_clients = sections.get("client", [])
    if isinstance(raw_clients, list):
        for index, entry in enumerate(raw_clients):
            client = _structure(entry, ClientSection, f"client[{index}]", problems)
            if client is not None:
                _check_client(client, f"client[{index}]", problems)
                clients.append((index, attrs.evolve(client, token_sha256=client.token_sha256.lower())))
    else:
        problems.append(f"client: expected an array of tables ([[client]]), got {_describe(raw_clients)}")
    _check_clients(clients, server, problems)

    # Cross-field checks, and the policy engine and anonymizer exactly as serve builds them.
    if server is not None:
        _check_server(server, problems, has_clients=bool(raw_clients))
    if telegram is not None:
        _check_telegram(telegram, problems)
    if policies is not None:
        _check_policies(policies, problems)
    _check_unique_fakes(replacements, problems)
    _check_anonymizer(for_anonymizer, problems)

    # Resolve paths against the config file's directory.
    abs_path = os.path.abspath(path)
    base_dir = os.path.dirname(abs_path)
    if server is not None:
        server = attrs.evolve(
            server,
            data_dir=_resolve(base_dir, server.data_dir, env),
            log_file=_resolve(base_dir, server.log_file, env),
            tls_cert=_resolve(base_dir, server.tls_cert, env),
            tls_key=_resolve(base_dir, server.tls_key, env),
            log_level=server.log_level.lower(),
            log_format=server.log_format.lower(),
        )
    servers = [(i, _resolve_paths(m, base_dir, env)) for i, m in servers]

    if check_files is not None:
        # What serve would trip over on disk, in the same pass; only for servers that will start and
        # whose values all interpolated.
        tls_ok = (
            server is not None
            and not _under("server.tls_cert", failed)
            and not _under("server.tls_key", failed)
        )
        running = [(i, m) for i, m in servers if m.runnable and not _under(f"mcp[{i}]", failed)]
        problems.extend(check_files(server if tls_ok else None, running, env))

    if problems or failed or server is None or policies is None:
        raise fail()

    mcp = [m for _, m in servers]
    enabled = console is not None and console.enabled
    warnings.extend(_warnings(server, telegram, policies, mcp, clients=len(clients), console=enabled))
    return Config(
        server=server,
        telegram=telegram,
        policies=policies,
        replacements=tuple(replacements),
        mcp=tuple(mcp),
        path=abs_path,
        warnings=tuple(warnings),
        clients=tuple(c for _, c in clients),
        pins=pins or PinsSection(),
        console=console or ConsoleSection(),
    )


def _read_config_text(name: str) -> str:
    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(
            [f"{name}: no such file (create one with `portero init {name}`, or pass --config)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read: {exc}"]) from None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str], *, preflight: bool = False) -> Config:
    """Read ``path`` and :func:`parse_config` it; an unreadable file is a ConfigError naming it.

    With ``preflight=True`` the filesystem checks of :mod:`.preflight` (programs on the children's PATH,
    ``cwd`` directories, TLS files) run too, and their problems come in the same ConfigError as every
    other problem: this is ``portero check``.
    """
    name = os.fspath(path)
    text = _read_config_text(name)
    if not preflight:
        return parse_config(text, path=name, env=env)
    from .preflight import check_files

    return _parse_config(text, path=name, env=env, check_files=check_files)


def load_data_dir(path: str | os.PathLike[str], env: Mapping[str, str]) -> str:
    """Only ``[server].data_dir`` of the config at ``path``, resolved like :func:`load_config` does.

    For ``portero audit``, which needs nothing else: the rest of the file is not validated, so variables
    that only matter for serving (tokens, credentials) need not be set. Raises :class:`ConfigError`.
    """
    name = os.fspath(path)
    text = _read_config_text(name)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from None
    server = raw.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError([f"{name}: server: expected a table, got {_describe(server)}"])
    value = server.get("data_dir", ServerSection().data_dir)
    if not isinstance(value, str):
        raise ConfigError([f"{name}: server.data_dir: expected a string, got {_describe(value)}"])
    try:
        value = interpolate(value, env)
    except (UnsetVariableError, ValueError) as exc:
        raise ConfigError([f"{name}: server.data_dir: {exc}"]) from None
    if not value:
        raise ConfigError([f"{name}: server.data_dir: must not be empty"])
    return _resolve(os.path.dirname(os.path.abspath(name)), value, env)
