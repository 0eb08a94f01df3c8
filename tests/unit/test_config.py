"""Config parsing and validation: pure, no files except where a path is the point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from portero.config import (
    Config,
    ConfigError,
    McpServer,
    Replacement,
    ServerSection,
    TelegramSection,
    UnsetVariableError,
    default_config_path,
    interpolate,
    is_loopback_host,
    load_config,
    load_data_dir,
    parse_config,
    parse_env_file,
    read_env_file,
)
from portero.core.anonymize import Anonymizer
from portero.core.policy import PolicyEngine

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "x" * 32

MINIMAL = f"""
[server]
bearer_token = "{TOKEN}"

[[mcp]]
name = "one"
command = "python"
"""


def parse(text: str, env: dict[str, str] | None = None, path: str = "/etc/portero/portero.toml") -> Config:
    return parse_config(text, path=path, env=env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env, path="portero.toml")
    return info.value.problems


# ---------------------------------------------------------------------------------------- durations


def test_duration_errors_name_the_key() -> None:
    problems = problems_of(MINIMAL + 'call_timeout = "soon"\n')
    assert len(problems) == 1
    assert problems[0].startswith("portero.toml: mcp[0].call_timeout: expected a duration")


def test_durations_in_config() -> None:
    config = parse(
        MINIMAL
        + 'call_timeout = "2m"\n'
        + '[telegram]\nbot_token = "t"\nadmin_chat_id = 5\napproval_timeout = 30\nmax_grant = "2h"\n'
    )
    assert config.mcp[0].call_timeout == 120
    assert config.telegram is not None
    assert config.telegram.approval_timeout == 30
    assert config.telegram.max_grant == 7200
    assert config.server.session_idle_timeout == 3600


# ------------------------------------------------------------------------------------ interpolation


def test_interpolate_basics() -> None:
    env = {"A": "alpha", "EMPTY": ""}
    assert interpolate("x${A}y", env) == "xalphay"
    assert interpolate("${MISSING:-dflt}", env) == "dflt"
    assert interpolate("${EMPTY:-dflt}", env) == "dflt"
    assert interpolate("${EMPTY}", env) == ""
    assert interpolate("${MISSING:-}", env) == ""
    assert interpolate("cost $$5 and $HOME", env) == "cost $5 and $HOME"
    assert interpolate("$${A}", env) == "${A}"


def test_interpolate_unset_names_variable() -> None:
    with pytest.raises(UnsetVariableError) as info:
        interpolate("a ${NOPE} b", {})
    assert info.value.name == "NOPE"
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "${NOPE} is not set"


def test_interpolate_malformed() -> None:
    with pytest.raises(ValueError):
        interpolate("${not valid}", {})
    with pytest.raises(ValueError):
        interpolate("${OPEN", {})


def test_interpolation_everywhere() -> None:
    text = """
[server]
bearer_token = "${TOK}"
port = "${PORT:-9000}"
allowed_origins = ["https://${HOST}"]

[[mcp]]
name = "${NAME:-one}"
command = "python"
args = ["-m", "${MOD}"]
env = { KEY = "${SECRET}", NESTED = "a-${MISSING:-b}-c" }
"""
    env = {"TOK": TOKEN, "HOST": "example.com", "MOD": "srv", "SECRET": "s3cret"}
    config = parse(text, env)
    assert config.server.bearer_token == TOKEN
    assert config.server.port == 9000
    assert config.server.allowed_origins == ("https://example.com",)
    m = config.mcp[0]
    assert m.name == "one"
    assert m.args == ("-m", "srv")
    assert m.env == {"KEY": "s3cret", "NESTED": "a-b-c"}


def test_unset_variable_names_key_path() -> None:
    text = MINIMAL + 'env = { TOKEN = "${FOO}" }\nargs = ["a", "${BAR}"]\n'
    problems = problems_of(text)
    assert "portero.toml: mcp[0].env.TOKEN: ${FOO} is not set" in problems
    assert "portero.toml: mcp[0].args[1]: ${BAR} is not set" in problems
    assert len(problems) == 2


def test_unset_bearer_token_reported_once() -> None:
    problems = problems_of('[server]\nbearer_token = "${PORTERO_BEARER_TOKEN}"\n')
    assert problems == ["portero.toml: server.bearer_token: ${PORTERO_BEARER_TOKEN} is not set"]


# ---------------------------------------------------------------------------------- structure errors


def test_unknown_keys_anywhere() -> None:
    text = f"""
polices = 1
[server]
bearer_token = "{TOKEN}"
prot = 1
[[mcp]]
name = "one"
command = "x"
skip_reason = "no"
[[replacements]]
fake = "a"
real = "b"
reverse = true
"""
    problems = problems_of(text)
    assert 'portero.toml: polices: unknown key (did you mean "policies"?)' in problems
    assert 'portero.toml: server.prot: unknown key (did you mean "port"?)' in problems
    assert "portero.toml: mcp[0].skip_reason: unknown key" in problems
    assert any(p.startswith("portero.toml: replacements[0].reverse: unknown key") for p in problems)
    assert len(problems) == 4


def test_three_mistakes_three_messages() -> None:
    text = f"""
[server]
bearer_token = "{TOKEN}"
port = "abc"

[[mcp]]
name = "ok"
command = "x"

[[mcp]]
name = "broken"

[policies]
default = "maybe"
"""
    problems = problems_of(text)
    assert sorted(problems) == sorted(
        [
            'portero.toml: server.port: expected an integer, got "abc"',
            "portero.toml: mcp[1].command: missing (a local server needs `command`, a remote one `url`)",
            'portero.toml: policies.default: expected one of allow, deny, require-approval, got "maybe"',
        ]
    )


def test_type_errors() -> None:
    text = f"""
[server]
bearer_token = "{TOKEN}"
host = 5
allowed_origins = "https://x"
[[mcp]]
name = "one"
command = "x"
prefix = "yes"
args = ["a", 2]
env = {{ A = 1 }}
"""
    problems = problems_of(text)
    assert "portero.toml: server.host: expected a string, got 5" in problems
    assert 'portero.toml: server.allowed_origins: expected an array of strings, got "https://x"' in problems
    assert 'portero.toml: mcp[0].prefix: expected true or false, got "yes"' in problems
    assert "portero.toml: mcp[0].args[1]: expected a string, got 2" in problems
    assert "portero.toml: mcp[0].env.A: expected a string, got 1" in problems


def test_mcp_must_be_array_of_tables() -> None:
    problems = problems_of(f'[server]\nbearer_token = "{TOKEN}"\n[mcp]\nname = "x"\n')
    assert problems == ["portero.toml: mcp: expected an array of tables ([[mcp]]), got a table"]


def test_invalid_toml() -> None:
    problems = problems_of("[server\n")
    assert len(problems) == 1
    assert problems[0].startswith("portero.toml: invalid TOML:")


def test_dotted_rule_key_hint() -> None:
    text = MINIMAL + '[policies.rules]\nfoo.bar = "allow"\n'
    problems = problems_of(text)
    assert problems == [
        "portero.toml: policies.rules.foo: expected a string, got a table (quote keys that contain dots)"
    ]


def test_numeric_strings_from_env_are_accepted() -> None:
    text = MINIMAL + '[telegram]\nbot_token = "t"\nadmin_chat_id = "${CHAT}"\n'
    config = parse(text, {"CHAT": "-100123"})
    assert config.telegram is not None
    assert config.telegram.admin_chat_id == -100123


# ------------------------------------------------------------------------------------ server checks


def test_defaults() -> None:
    config = parse(MINIMAL)
    s = config.server
    assert (s.host, s.port, s.auth, s.tool_separator, s.log_level) == (
        "127.0.0.1",
        8443,
        "bearer",
        "__",
        "info",
    )
    assert s.data_dir == "/etc/portero/data"
    assert s.max_body_bytes == 4 * 1024 * 1024
    assert config.path == "/etc/portero/portero.toml"
    assert config.telegram is None
    assert config.policies.default == "allow"
    assert config.policies.rules == {}
    assert config.replacements == ()


def test_paths_resolved_against_config_dir() -> None:
    text = (
        MINIMAL.replace("[server]\n", '[server]\ndata_dir = "../var"\nlog_file = "log/p.log"\n')
        + 'cwd = "work"\n'
    )
    config = parse(text, path="/etc/portero/portero.toml")
    assert config.server.data_dir == "/etc/var"
    assert config.server.log_file == "/etc/portero/log/p.log"
    assert config.mcp[0].cwd == "/etc/portero/work"
    absolute = parse(MINIMAL.replace("[server]\n", '[server]\ndata_dir = "/srv/data"\n'))
    assert absolute.server.data_dir == "/srv/data"


def test_relative_config_path_made_absolute() -> None:
    config = parse(MINIMAL, path="portero.toml")
    assert config.path == os.path.abspath("portero.toml")
    assert config.server.data_dir == os.path.join(os.getcwd(), "data")


def test_auth_none_refused_on_non_loopback() -> None:
    problems = problems_of('[server]\nhost = "0.0.0.0"\nauth = "none"\n')
    assert len(problems) == 1
    assert problems[0].startswith('portero.toml: server.auth: "none" is only allowed when host is a loopback')


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"])
def test_auth_none_allowed_on_loopback(host: str) -> None:
    config = parse(f'[server]\nhost = "{host}"\nauth = "none"\n')
    assert config.server.auth == "none"
    assert any('auth = "none"' in w for w in config.warnings)


def test_is_loopback_host() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("192.168.1.2")
    assert not is_loopback_host("example.com")


def test_bearer_token_required_and_long_enough() -> None:
    assert problems_of("[server]\n")[0].startswith("portero.toml: server.bearer_token: required when auth")
    problems = problems_of('[server]\nbearer_token = "short"\n')
    assert problems == ["portero.toml: server.bearer_token: too short (5 characters); use at least 16"]


def test_bad_auth_value() -> None:
    assert problems_of('[server]\nauth = "basic"\n') == [
        'portero.toml: server.auth: expected "bearer" or "none", got "basic"'
    ]


@pytest.mark.parametrize(("key", "missing"), [("tls_cert", "tls_key"), ("tls_key", "tls_cert")])
def test_tls_both_or_neither(key: str, missing: str) -> None:
    problems = problems_of(MINIMAL.replace("[server]\n", f'[server]\n{key} = "a.pem"\n'))
    assert problems == [
        f"portero.toml: server.{missing}: tls_cert and tls_key must be set together (or neither)"
    ]


def test_tls_both() -> None:
    config = parse(MINIMAL.replace("[server]\n", '[server]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'))
    assert config.server.tls
    assert config.server.tls_cert == "/etc/portero/c.pem"


@pytest.mark.parametrize("sep", ["", "/", "a b", "::"])
def test_tool_separator_charset(sep: str) -> None:
    problems = problems_of(MINIMAL.replace("[server]\n", f'[server]\ntool_separator = "{sep}"\n'))
    assert len(problems) == 1
    assert problems[0].startswith("portero.toml: server.tool_separator:")


def test_misc_server_values() -> None:
    text = MINIMAL.replace(
        "[server]\n",
        '[server]\nport = 70000\nlog_level = "loud"\nallowed_origins = ["https://ok.example", "nope"]\n'
        "max_body_bytes = 0\n",
    )
    problems = problems_of(text)
    assert "portero.toml: server.port: must be between 0 and 65535, got 70000" in problems
    assert any(p.startswith("portero.toml: server.log_level:") for p in problems)
    assert any(p.startswith("portero.toml: server.allowed_origins[1]:") for p in problems)
    assert "portero.toml: server.max_body_bytes: must be a positive number of bytes" in problems
    assert len(problems) == 4


def test_port_zero_allowed() -> None:
    assert parse(MINIMAL.replace("[server]\n", "[server]\nport = 0\n")).server.port == 0


# --------------------------------------------------------------------------------------- mcp checks


def test_duplicate_server_names() -> None:
    problems = problems_of(MINIMAL + '[[mcp]]\nname = "one"\ncommand = "y"\n')
    assert problems == ['portero.toml: mcp[1].name: duplicate server name "one" (also mcp[0])']


@pytest.mark.parametrize("name", ["has space", "under_score", "slash/x", "", "dot.ted"])
def test_server_name_charset(name: str) -> None:
    problems = problems_of(MINIMAL.replace('name = "one"', f'name = "{name}"'))
    assert len(problems) == 1
    assert problems[0].startswith("portero.toml: mcp[0].name: use only letters, digits and '-'")


def test_empty_command() -> None:
    assert problems_of(MINIMAL.replace('command = "python"', 'command = " "')) == [
        "portero.toml: mcp[0].command: must not be empty (a local server needs `command`, a remote one `url`)"
    ]


def test_required_env_skips_server() -> None:
    text = (
        MINIMAL
        + '[[mcp]]\nname = "gh"\ncommand = "npx"\nrequired_env = ["GITHUB_TOKEN"]\n'
        + 'env = { GITHUB_PERSONAL_ACCESS_TOKEN = "${GITHUB_TOKEN}", OTHER = "${UNSET_TOO}" }\n'
    )
    config = parse(text)
    gh = config.mcp[1]
    assert gh.skip_reason == "GITHUB_TOKEN is not set"
    assert not gh.runnable
    assert config.mcp[0].skip_reason is None and config.mcp[0].runnable
    assert any("'gh' is skipped: GITHUB_TOKEN is not set" in w for w in config.warnings)
    # Empty counts as unset.
    assert parse(text, {"GITHUB_TOKEN": ""}).mcp[1].skip_reason == "GITHUB_TOKEN is not set"
    # Once set, the server runs and its other variables must resolve.
    problems = problems_of(text, {"GITHUB_TOKEN": "ghp"})
    assert problems == ["portero.toml: mcp[1].env.OTHER: ${UNSET_TOO} is not set"]
    config = parse(text, {"GITHUB_TOKEN": "ghp", "UNSET_TOO": "x"})
    assert config.mcp[1].runnable
    assert config.mcp[1].env["GITHUB_PERSONAL_ACCESS_TOKEN"] == "ghp"


def test_skipped_server_still_checks_keys() -> None:
    text = MINIMAL + '[[mcp]]\nname = "gh"\ncommand = "npx"\nrequired_env = ["T"]\nbogus = 1\n'
    assert problems_of(text) == ["portero.toml: mcp[1].bogus: unknown key"]


def test_disabled_server_is_lenient() -> None:
    config = parse(MINIMAL + '[[mcp]]\nname = "off"\ncommand = "${CMD}"\nenabled = false\n')
    assert not config.mcp[1].enabled
    assert not config.mcp[1].runnable
    assert any("disabled" in w for w in config.warnings)


def test_two_unprefixed_servers_warn() -> None:
    text = MINIMAL + "prefix = false\n" + '[[mcp]]\nname = "two"\ncommand = "y"\nprefix = false\n'
    config = parse(text)
    assert any("prefix = false" in w and "'one'" in w and "'two'" in w for w in config.warnings)


def test_no_servers_warns() -> None:
    config = parse(f'[server]\nbearer_token = "{TOKEN}"\n')
    assert config.mcp == ()
    assert "no mcp server will start" in config.warnings


# ------------------------------------------------------------------------------ policies/replacements


def test_policies() -> None:
    text = (
        MINIMAL
        + '[policies]\ndefault = "deny"\n[policies.rules]\n'
        + '"one/*" = "allow"\n"*/delete_*" = "require-approval"\n'
    )
    config = parse(text)
    assert config.policies.default == "deny"
    assert config.policies.rules == {"one/*": "allow", "*/delete_*": "require-approval"}
    assert "no [telegram] section: calls that require approval will be denied" in config.warnings
    # With the console on, it approves: no such warning.
    config = parse(text + "[console]\nenabled = true\n")
    assert config.console.enabled and config.console.approval_timeout == 120.0
    assert not any("[telegram]" in w for w in config.warnings)


def test_console_section() -> None:
    config = parse(MINIMAL)
    assert not config.console.enabled  # off by default
    config = parse(MINIMAL + '[console]\nenabled = true\nsession_idle = "10m"\napproval_timeout = "5m"\n')
    assert (config.console.session_idle, config.console.approval_timeout) == (600.0, 300.0)
    problems = problems_of(MINIMAL + '[console]\nenabeld = true\nsession_max = "soon"\n')
    assert any("console.enabeld" in p and "unknown key" in p for p in problems), problems
    assert any(p.startswith("portero.toml: console.session_max:") for p in problems), problems


def test_policy_action_typo() -> None:
    problems = problems_of(MINIMAL + '[policies.rules]\n"one/x" = "require_approval"\n"" = "allow"\n')
    assert (
        'portero.toml: policies.rules."one/x": expected one of allow, deny, require-approval, '
        'got "require_approval" (did you mean "require-approval"?)' in problems
    )
    assert "portero.toml: policies.rules: a rule pattern must not be empty" in problems


def test_policy_rule_for_unknown_server_warns() -> None:
    config = parse(MINIMAL + '[policies.rules]\n"gihtub/create_issue" = "deny"\n')
    assert any("'gihtub/create_issue' names no configured server" in w for w in config.warnings)


def test_replacements() -> None:
    text = MINIMAL + (
        '[[replacements]]\nfake = "John Doe"\nreal = "${REAL_NAME}"\n'
        '[[replacements]]\nfake = "key"\nreal = "k"\nbidirectional = false\ncase_sensitive = false\n'
        'response_replacement = "***"\n'
    )
    config = parse(text, {"REAL_NAME": "Jane Real"})
    assert config.replacements == (
        Replacement(fake="John Doe", real="Jane Real"),
        Replacement(
            fake="key", real="k", bidirectional=False, case_sensitive=False, response_replacement="***"
        ),
    )
    assert config.replacements[0].response_replacement == "[REDACTED]"


def test_replacement_empty_sides() -> None:
    text = MINIMAL + '[[replacements]]\nfake = ""\nreal = "${REAL:-}"\n'
    assert problems_of(text) == [
        "portero.toml: replacements[0].fake: must not be empty",
        "portero.toml: replacements[0].real: must not be empty",
    ]


def test_replacement_missing_real() -> None:
    assert problems_of(MINIMAL + '[[replacements]]\nfake = "a"\n') == [
        "portero.toml: replacements[0].real: missing required key"
    ]


def test_replacement_duplicate_fake() -> None:
    text = MINIMAL + '[[replacements]]\nfake = "a"\nreal = "b"\n[[replacements]]\nfake = "a"\nreal = "c"\n'
    assert problems_of(text) == ['portero.toml: replacements[1].fake: "a" is already used by replacements[0]']


def test_telegram_section() -> None:
    problems = problems_of(MINIMAL + '[telegram]\nbot_token = ""\n')
    assert (
        "portero.toml: telegram.admin_chat_id: missing required key "
        "(or set pairing_code, and send /pair <code> to the bot)"
    ) in problems
    problems = problems_of(MINIMAL + '[telegram]\nbot_token = ""\nadmin_chat_id = 1\napi_base = "ftp://x"\n')
    assert problems == [
        "portero.toml: telegram.bot_token: must not be empty",
        'portero.toml: telegram.api_base: expected an http(s) URL, got "ftp://x"',
    ]


# --------------------------------------------------------------------------------------- secrets


def test_repr_hides_secrets() -> None:
    text = MINIMAL.replace(
        'command = "python"', 'command = "python"\nenv = { API_KEY = "envsecret-123" }'
    ) + (
        '[telegram]\nbot_token = "bot-secret-999"\nadmin_chat_id = 1\n'
        '[[replacements]]\nfake = "John"\nreal = "real-person-name"\n'
    )
    config = parse(text)
    shown = repr(config)
    for secret in (TOKEN, "bot-secret-999", "real-person-name", "envsecret-123"):
        assert secret not in shown
    assert "John" in shown
    assert TOKEN not in repr(ServerSection(bearer_token=TOKEN))
    assert "bot-secret" not in repr(TelegramSection(bot_token="bot-secret", admin_chat_id=1))
    assert "envsecret" not in repr(McpServer(name="a", command="b", env={"K": "envsecret"}))


# -------------------------------------------------------------------------------------- env files


def test_parse_env_file() -> None:
    text = """
# comment
; also a comment

PLAIN=value
SPACED = padded value
export EXPORTED=yes
DOUBLE="a \\"quoted\\" value\\nnext"
SINGLE='literal $HOME \\n'
EMPTY=
HASH=abc # not a comment in systemd
CONT=one \\
two
MULTI="line1
line2"
"""
    env = parse_env_file(text)
    assert env == {
        "PLAIN": "value",
        "SPACED": "padded value",
        "EXPORTED": "yes",
        "DOUBLE": 'a "quoted" value\nnext',
        "SINGLE": "literal $HOME \\n",
        "EMPTY": "",
        "HASH": "abc # not a comment in systemd",
        "CONT": "one two",
        "MULTI": "line1\nline2",
    }


def test_parse_env_file_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_env_file('GOOD=1\nnot a line\n1BAD=2\nOPEN="x\n', path="x.env")
    assert info.value.problems == [
        "x.env:2: expected KEY=VALUE (KEY: letters, digits and '_', not starting with a digit)",
        "x.env:3: expected KEY=VALUE (KEY: letters, digits and '_', not starting with a digit)",
        'x.env:4: OPEN: missing closing "',
    ]


def test_env_file_errors_never_repeat_the_content() -> None:
    # An env file holds secrets (or is a symlink to something that does): errors say where, not what.
    text = "TOKEN=ok\nhunter2-secret-line\n  s3cr3t value with spaces\n"
    with pytest.raises(ConfigError) as info:
        parse_env_file(text, path="x.env")
    shown = str(info.value)
    assert "x.env:2:" in shown and "x.env:3:" in shown
    assert "hunter2" not in shown and "s3cr3t" not in shown


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "p.env"
    path.write_text("A=1\n")
    assert read_env_file(path) == {"A": "1"}
    with pytest.raises(ConfigError) as info:
        read_env_file(tmp_path / "missing.env")
    assert str(tmp_path / "missing.env") in str(info.value)


# ------------------------------------------------------------------------------------ loading files


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL)
    config = load_config(path, {})
    assert config.path == str(path)
    assert config.server.data_dir == str(tmp_path / "data")


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", {})
    assert str(tmp_path / "nope.toml") in str(info.value)
    assert "no such file" in str(info.value)


def test_default_config_path() -> None:
    assert default_config_path({}) == "./portero.toml"
    assert default_config_path({"PORTERO_CONFIG": "/etc/p.toml"}) == "/etc/p.toml"


def test_config_error_str_joins_lines() -> None:
    assert str(ConfigError(["a", "b"])) == "a\nb"


# ---------------------------------------------------------------------------------- the example file


def test_example_config_parses_with_empty_env() -> None:
    path = REPO_ROOT / "portero.toml"
    config = load_config(path, {})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8443
    assert config.server.auth == "bearer"
    assert len(config.server.bearer_token) >= 16
    by_name = {m.name: m for m in config.mcp}
    assert set(by_name) >= {"everything", "filesystem", "github", "google"}
    assert by_name["everything"].runnable
    assert by_name["filesystem"].runnable
    assert os.path.isdir(os.path.join(by_name["filesystem"].cwd, by_name["filesystem"].args[-1]))
    assert by_name["github"].skip_reason == "GITHUB_TOKEN is not set"
    assert by_name["google"].skip_reason is not None
    assert "GOOGLE_OAUTH_CLIENT_ID" in by_name["google"].skip_reason
    assert config.telegram is None
    assert config.policies.default == "allow"
    assert "require-approval" in config.policies.rules.values()
    assert config.replacements and all(r.real for r in config.replacements)


def test_example_config_with_credentials() -> None:
    env = {
        "GITHUB_TOKEN": "ghp_x",
        "GOOGLE_OAUTH_CLIENT_ID": "id",
        "GOOGLE_OAUTH_CLIENT_SECRET": "secret",
        "PORTERO_BEARER_TOKEN": "t" * 40,
    }
    config = load_config(REPO_ROOT / "portero.toml", env)
    assert all(m.runnable for m in config.mcp)
    assert config.server.bearer_token == "t" * 40
    github = next(m for m in config.mcp if m.name == "github")
    assert github.env == {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_x"}


def test_a_broken_mcp_entry_still_reports_its_bad_name() -> None:
    from portero.config import ConfigError, parse_config

    text = '[server]\nbearer_token = "0123456789abcdef0123"\n[[mcp]]\nname = "bad name"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="p.toml", env={})
    problems = info.value.problems
    assert any("mcp[0].command" in p for p in problems)
    assert any("mcp[0].name" in p and "bad name" in p for p in problems)


# ------------------------------------------------- check builds what serve builds (policies, anonymizer)


@pytest.mark.parametrize(
    "pattern", ["github/create issue", "a\tb", "x" * 201, "one/\x07bell", " leading", "one/*\n"]
)
def test_policy_patterns_the_engine_refuses_are_refused(pattern: str) -> None:
    # Before: `check` printed OK and `serve` died building the PolicyEngine.
    with pytest.raises(ValueError):
        PolicyEngine("allow", {pattern: "allow"})
    text = MINIMAL + "[policies.rules]\n" + f"{json.dumps(pattern)} = " + '"allow"\n'
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("portero.toml: policies.rules.")
    assert "a pattern must" in problems[0]


@pytest.mark.parametrize(
    "rules",
    [
        {"one/*": "allow", "*/x": "deny"},
        {"one/read_file": "require-approval", "*": "deny"},
        {"*/*/*": "allow"},
    ],
)
def test_policies_check_accepts_is_what_the_engine_accepts(rules: dict[str, str]) -> None:
    text = MINIMAL + "[policies.rules]\n" + "".join(f'{json.dumps(p)} = "{a}"\n' for p, a in rules.items())
    config = parse(text)
    PolicyEngine(config.policies.default, dict(config.policies.rules))


def test_two_replacements_sharing_a_real_value_are_refused() -> None:
    # Before: `check` printed OK and `serve` died building the Anonymizer.
    text = MINIMAL + (
        '[[replacements]]\nfake = "Alice"\nreal = "${REAL}"\n'
        '[[replacements]]\nfake = "Bob"\nreal = "Carol Secretname"\n'
        '[[replacements]]\nfake = "Dan"\nreal = "other"\n'
    )
    problems = problems_of(text, {"REAL": "Carol Secretname"})
    assert problems == [
        "portero.toml: replacements[1].real: the same real value as replacements[0].real: "
        "a response holding it could not be turned back into one fake"
    ]
    assert "Carol" not in problems[0]


def test_replacements_equal_ignoring_case_are_refused_on_the_right_side() -> None:
    text = MINIMAL + (
        '[[replacements]]\nfake = "alice"\nreal = "r1"\ncase_sensitive = false\n'
        '[[replacements]]\nfake = "ALICE"\nreal = "r2"\n'
        '[[replacements]]\nfake = "x"\nreal = "Real Name"\ncase_sensitive = false\n'
        '[[replacements]]\nfake = "y"\nreal = "REAL NAME"\n'
    )
    problems = problems_of(text)
    assert problems == [
        'portero.toml: replacements[1].fake: "ALICE" equals replacements[0].fake ignoring case '
        "(case_sensitive = false): the gateway could not tell which real value a client's text stands for",
        "portero.toml: replacements[3].real: equals replacements[2].real ignoring case "
        "(case_sensitive = false): a response holding it could not be turned back into one fake",
    ]
    assert not any("Real Name" in p or "REAL NAME" in p for p in problems)


def test_replacements_check_accepts_is_what_the_anonymizer_accepts() -> None:
    text = MINIMAL + (
        '[[replacements]]\nfake = "Ann"\nreal = "r-ann"\n'
        '[[replacements]]\nfake = "Anna"\nreal = "r-anna"\ncase_sensitive = false\n'
        '[[replacements]]\nfake = "A"\nreal = "B"\n[[replacements]]\nfake = "B"\nreal = "A"\n'
    )
    config = parse(text)
    Anonymizer.from_config(config.replacements)


# ------------------------------------------------------------------- strings where integers belong


def test_quoted_number_is_refused_unless_interpolated() -> None:
    # Before: port = "8443" was accepted silently.
    problems = problems_of(MINIMAL.replace("[server]\n", '[server]\nport = "8443"\n'))
    assert problems == [
        'portero.toml: server.port: expected an integer, got "8443" (write 8443 without quotes)'
    ]
    problems = problems_of(MINIMAL + '[telegram]\nbot_token = "t"\nadmin_chat_id = "-100"\n')
    assert problems == [
        'portero.toml: telegram.admin_chat_id: expected an integer, got "-100" (write -100 without quotes)'
    ]
    # What ${VAR} produces is a string: that is the one place a number may be one.
    assert (
        parse(MINIMAL.replace("[server]\n", '[server]\nport = "${PORT}"\n'), {"PORT": "9000"}).server.port
        == 9000
    )
    assert parse(MINIMAL.replace("[server]\n", '[server]\nport = "${PORT:-9001}"\n')).server.port == 9001
    assert (
        parse(MINIMAL.replace("[server]\n", '[server]\nport = "90${D}"\n'), {"D": "02"}).server.port == 9002
    )
    problems = problems_of(MINIMAL.replace("[server]\n", '[server]\nport = "${PORT}"\n'), {"PORT": "http"})
    assert problems == ['portero.toml: server.port: expected an integer, got "http"']


def test_quoted_boolean_is_refused_unless_interpolated() -> None:
    problems = problems_of(MINIMAL + 'prefix = "false"\n')
    assert problems == [
        'portero.toml: mcp[0].prefix: expected true or false, got "false" (write false without quotes)'
    ]
    assert parse(MINIMAL + 'prefix = "${PREFIX}"\n', {"PREFIX": "false"}).mcp[0].prefix is False


def test_interpolated_values_are_plain_strings() -> None:
    config = parse(MINIMAL + 'args = ["${A}"]\nenv = { K = "${A}" }\n', {"A": "v"})
    m = config.mcp[0]
    assert type(m.args[0]) is str and type(m.env["K"]) is str and type(config.server.bearer_token) is str


# -------------------------------------------------------------- one mistake never hides another


def test_unknown_key_does_not_hide_the_rest_of_its_table() -> None:
    # Before: an unknown key was the only problem reported for its table.
    text = """
[server]
prot = 1
bearer_token = "short"
log_level = "loud"
[[mcp]]
name = "bad name"
command = "x"
bogus = 1
inherit_env = ["OK", "not-valid"]
[[replacements]]
fake = ""
real = "r"
reverse = true
"""
    assert sorted(problems_of(text)) == sorted(
        [
            'portero.toml: server.prot: unknown key (did you mean "port"?)',
            "portero.toml: server.bearer_token: too short (5 characters); use at least 16",
            'portero.toml: server.log_level: expected one of debug, info, warning, error, got "loud"',
            "portero.toml: mcp[0].bogus: unknown key",
            "portero.toml: mcp[0].name: use only letters, digits and '-', got \"bad name\"",
            'portero.toml: mcp[0].inherit_env[1]: invalid environment variable name "not-valid" '
            "(letters, digits and '_', not starting with a digit)",
            "portero.toml: replacements[0].reverse: unknown key",
            "portero.toml: replacements[0].fake: must not be empty",
        ]
    )


def test_a_bad_value_does_not_hide_the_cross_checks_of_its_table() -> None:
    text = '[server]\nhost = 5\nauth = "none"\nbearer_token = ""\ntls_cert = "c.pem"\n'
    problems = problems_of(text)
    assert "portero.toml: server.host: expected a string, got 5" in problems
    assert "portero.toml: server.tls_key: tls_cert and tls_key must be set together (or neither)" in problems
    assert len(problems) == 2


def test_inherit_env() -> None:
    config = parse(MINIMAL + 'inherit_env = ["HTTPS_PROXY", "NODE_OPTIONS"]\n')
    assert config.mcp[0].inherit_env == ("HTTPS_PROXY", "NODE_OPTIONS")
    assert problems_of(MINIMAL + 'inherit_env = "HTTPS_PROXY"\n') == [
        'portero.toml: mcp[0].inherit_env: expected an array of strings, got "HTTPS_PROXY"'
    ]
    problems = problems_of(MINIMAL + 'inherit_env = ["A=B", "", "1X", 3]\n')
    assert "portero.toml: mcp[0].inherit_env[3]: expected a string, got 3" in problems
    assert problems_of(MINIMAL + 'inherit_env = ["A=B", "", "1X"]\n') == [
        f"portero.toml: mcp[0].inherit_env[{i}]: invalid environment variable name {json.dumps(n)} "
        "(letters, digits and '_', not starting with a digit)"
        for i, n in enumerate(["A=B", "", "1X"])
    ]


# ------------------------------------------------------------------------- audit: only data_dir


def test_load_data_dir_needs_no_secrets(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[server]\nbearer_token = "${PORTERO_BEARER_TOKEN}"\ndata_dir = "${DATA:-var}"\n'
        '[telegram]\nbot_token = "${TELEGRAM_BOT_TOKEN}"\nadmin_chat_id = 1\n'
        '[[mcp]]\nname = "gh"\ncommand = "npx"\nenv = { T = "${GITHUB_TOKEN}" }\n'
    )
    assert load_data_dir(path, {}) == str(tmp_path / "var")
    assert load_data_dir(path, {"DATA": "/srv/p"}) == "/srv/p"
    path.write_text("[server]\n")
    assert load_data_dir(path, {}) == str(tmp_path / "data")
    path.write_text("")
    assert load_data_dir(path, {}) == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\ndata_dir = "${NOPE}"\n', "server.data_dir: ${NOPE} is not set"),
        ("[server]\ndata_dir = 5\n", "server.data_dir: expected a string, got 5"),
        ('[server]\ndata_dir = ""\n', "server.data_dir: must not be empty"),
        ("server = 1\n", "server: expected a table, got 1"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_load_data_dir_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_data_dir(path, {})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{path}: {message}")


# ------------------------------------------------------------------------------------ remote servers

REMOTE = f"""
[server]
bearer_token = "{TOKEN}"

[[mcp]]
name = "linear"
url = "https://mcp.linear.app/mcp"
"""


def test_a_remote_server_parses_with_its_defaults() -> None:
    text = REMOTE + 'headers = { "X-Team" = "${TEAM}" }\nauth = "bearer"\ntoken = "${LINEAR_TOKEN}"\n'
    cfg = parse(text, {"TEAM": "core", "LINEAR_TOKEN": "lin-secret"}, path="portero.toml")
    (m,) = cfg.mcp
    assert m.remote and m.command == "" and m.transport == "auto"
    assert m.headers == {"X-Team": "core"} and m.token == "lin-secret"
    assert "lin-secret" not in repr(m)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('auth = "bearer"\n', 'mcp[0].token: auth = "bearer" needs a token'),
        ('token = "t"\n', 'mcp[0].token: only used with auth = "bearer"'),
        ('args = ["x"]\n', "mcp[0].args: only for a local server (with `command`)"),
        ('command = "node"\n', "mcp[0]: has both `command` and `url`"),
        ('transport = "websocket"\n', "mcp[0].transport: 'websocket' needs a ws:// or wss:// url"),
        ('transport = "grpc"\n', "mcp[0].transport: must be one of auto, streamable-http, sse, websocket"),
        ('auth = "basic"\n', "mcp[0].auth: must be one of none, bearer, oauth"),
        ('client_id = "c"\n', 'mcp[0].client_id: only used with auth = "oauth"'),
        ('headers = { "Mcp-Session-Id" = "1" }\n', "mcp[0].headers.Mcp-Session-Id: set by Portero itself"),
        ('headers = { "X-A" = "1\\r\\nX-B: 2" }\n', "mcp[0].headers.X-A: not a valid HTTP header"),
        (
            'auth = "oauth"\nheaders = { Authorization = "x" }\n',
            "mcp[0].headers.Authorization: auth = 'oauth'",
        ),
    ],
)
def test_remote_server_mistakes_name_the_key(extra: str, expected: str) -> None:
    problems = problems_of(REMOTE + extra)
    assert any(p.startswith(f"portero.toml: {expected}") for p in problems), problems


@pytest.mark.parametrize("url", ["ftp://host/x", "https://", "mcp.linear.app/mcp", "https://u:p@host/mcp"])
def test_remote_server_urls_that_cannot_work(url: str) -> None:
    problems = problems_of(REMOTE.replace("https://mcp.linear.app/mcp", url))
    assert len(problems) == 1 and problems[0].startswith("portero.toml: mcp[0].url: "), problems


def test_local_only_keys_are_refused_on_a_local_server() -> None:
    problems = problems_of(MINIMAL + 'transport = "sse"\n')
    assert problems == [
        "portero.toml: mcp[0].transport: only for a remote server (with `url`), not with `command`"
    ]


def test_a_websocket_url_needs_no_transport_key() -> None:
    (m,) = parse(REMOTE.replace("https://mcp.linear.app/mcp", "wss://h.example/mcp"), None, path="p.toml").mcp
    assert m.transport == "auto" and m.url.startswith("wss://")


# ------------------------------------------------------------------------------------ [[client]] entries

_HASH = "ab" * 32
CLIENTS_ONLY = f"""
[[mcp]]
name = "one"
command = "python"

[[client]]
name = "laptop"
token_sha256 = "{_HASH}"
tools = ["one/*", "two/read_*"]
policy = {{ "one/write" = "allow", "one/*" = "require-approval" }}
"""


def test_clients_parse_without_bearer_token() -> None:
    config = parse(CLIENTS_ONLY)
    (client,) = config.clients
    assert client.name == "laptop"
    assert client.token_sha256 == _HASH
    assert client.tools == ("one/*", "two/read_*")
    assert client.policy == {"one/write": "allow", "one/*": "require-approval"}
    assert _HASH not in repr(client)  # the hash is not a secret, but it stays out of logs all the same


def test_client_defaults_to_all_tools_and_no_rules() -> None:
    config = parse(MINIMAL + f'\n[[client]]\nname = "ci"\ntoken_sha256 = "{_HASH.upper()}"\n')
    (client,) = config.clients
    assert client.tools == ("*",)
    assert client.policy == {}
    assert client.token_sha256 == _HASH  # stored lower-case, as `portero client add` writes it


def test_no_token_and_no_client_is_still_an_error() -> None:
    problems = problems_of('[[mcp]]\nname = "one"\ncommand = "python"\n')
    assert any(p.startswith("portero.toml: server.bearer_token: required") for p in problems)


def test_client_mistakes_name_their_keys() -> None:
    text = f"""
[[mcp]]
name = "one"
command = "python"

[[client]]
name = "lap top"
token_sha256 = "not-a-hash"
tools = ["one/*", "bad glob"]
policy = {{ "one/x" = "alow" }}
colour = "blue"

[[client]]
name = "ci"
token_sha256 = "{_HASH}"

[[client]]
name = "ci"
token_sha256 = "{_HASH}"
"""
    problems = problems_of(text)
    assert any(p.startswith("portero.toml: client[0].name: use only letters") for p in problems)
    assert any(p.startswith("portero.toml: client[0].token_sha256: expected 64 hex digits") for p in problems)
    assert any(p.startswith("portero.toml: client[0].tools[1]: a pattern must not contain") for p in problems)
    assert any(
        p.startswith('portero.toml: client[0].policy."one/x": expected one of') and '"allow"' in p
        for p in problems
    )
    assert any(p.startswith("portero.toml: client[0].colour: unknown key") for p in problems)
    assert any(p.startswith('portero.toml: client[2].name: duplicate client name "ci"') for p in problems)
    assert any(
        p.startswith("portero.toml: client[2].token_sha256: the same token as client[1]") for p in problems
    )


def test_default_is_the_bearer_tokens_client() -> None:
    problems = problems_of(MINIMAL + f'\n[[client]]\nname = "default"\ntoken_sha256 = "{_HASH}"\n')
    assert any(p.startswith('portero.toml: client[0].name: "default" is the client of') for p in problems)
    assert parse(CLIENTS_ONLY.replace('"laptop"', '"default"')).clients[0].name == "default"


def test_client_must_be_an_array_of_tables() -> None:
    problems = problems_of(MINIMAL + '\n[client]\nname = "x"\n')
    assert any(p.startswith("portero.toml: client: expected an array of tables") for p in problems)


# ------------------------------------------------------------------- [[mcp]] descriptions overrides


def test_description_overrides_parse() -> None:
    config = parse(MINIMAL + 'descriptions = { read_file = "Read one file under /srv.", "x.y" = "Z" }\n')
    assert config.mcp[0].descriptions == {"read_file": "Read one file under /srv.", "x.y": "Z"}
    assert parse(MINIMAL).mcp[0].descriptions == {}


def test_description_override_mistakes_name_the_key() -> None:
    long = "x" * 2001
    problems = problems_of(MINIMAL + f'descriptions = {{ "" = "a", b = "  ", c = "{long}", d = "ok" }}\n')
    assert problems == [
        'portero.toml: mcp[0].descriptions."": a tool name must not be empty',
        "portero.toml: mcp[0].descriptions.b: the description must not be empty (leave the key out instead)",
        "portero.toml: mcp[0].descriptions.c: 2001 characters, more than 2000",
    ]
    assert problems_of(MINIMAL + "descriptions = { a = 3 }\n") == [
        "portero.toml: mcp[0].descriptions.a: expected a string, got 3"
    ]
    assert problems_of(MINIMAL + 'descriptions = "x"\n') == [
        'portero.toml: mcp[0].descriptions: expected a table of strings, got "x"'
    ]


def test_clients_without_auth_are_warned_about() -> None:
    text = (
        '[server]\nauth = "none"\n[[mcp]]\nname = "one"\ncommand = "python"\n'
        '[[client]]\nname = "laptop"\ntoken_sha256 = "' + "a" * 64 + '"\n'
    )
    warnings = parse(text, path="portero.toml").warnings
    assert 'auth = "none": the [[client]] entries and their tokens are not used' in warnings
