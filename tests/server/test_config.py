"""Tests of the configuration layer: defaults, the shipped file, layering and errors.

Every test passes an explicit `env` mapping, so the developer's own AUTOAGENT_* variables
never leak in. Error tests pin that the message names the key and the source.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from events.errors import AutoagentError
from server.config import (
    Config,
    LLMConfig,
    ServerConfig,
    config_as_dict,
    load_config,
    resolve_config_path,
)
from server.errors import ConfigError, ServerError

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"

TOKEN_A = "a" * 32
TOKEN_B = "b" * 40
EXPECTED_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "host": "127.0.0.1",
        "port": 8765,
        "tokens": [],
        "principals": [],
        "max_frame_bytes": 1048576,
        "requests_per_second": 20.0,
        "max_connections": 100,
        "max_connections_per_token": 50,
        "max_runs_per_session": 4,
        "slow_client_timeout_s": 10.0,
        "allowed_origins": [],
        "console": True,
        "hello_timeout_s": 10.0,
        "idle_timeout_s": 300.0,
        "metrics_public": False,
        "node_id": "",
    },
    "store": {
        "backend": "lmdb",
        "url": "",
        "data_dir": "./data",
        "sync": True,
        "map_size_mb": 1024,
        "compress_over_bytes": 4096,
        "max_event_bytes": 4194304,
        "keys_dir": "",
        "watch_interval_s": 0.05,
        "commit_linger_ms": 5.0,
    },
    "llm": {
        "provider": "offline",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "model": "gpt-4o-mini",
        "timeout_s": 30.0,
        "max_retries": 4,
        "rpm_limit": 500,
        "tpm_limit": 200000,
        "max_parallel_calls": 8,
    },
    "embeddings": {
        "provider": "local",
        "model": "all-MiniLM-L6-v2",
        "batch_size": 64,
        "local_runtime": "auto",
    },
    "performance": {
        "max_parallel_steps": 16,
        "session_window": 20,
        "snapshot_every": 10000,
        "projection_linger_ms": 50.0,
        "faiss_ivf_threshold": 10000,
        "faiss_nprobe": 8,
        "prompt_cache_size": 128,
        "step_timeout_s": 60.0,
        "gc_young_threshold": 50000,
        "gc_freeze": True,
        "switch_interval_ms": 0.5,
    },
    "features": {
        "parallel_execution": True,
        "async_planner": True,
        "background_verification": True,
        "step_batching": True,
        "streaming_plan": True,
        "batch_embeddings": True,
        "compact_tool_catalog": True,
        "tool_selection": True,
        "compact_history": True,
        "compact_plan_steps": True,
        "intent_in_plan": True,
    },
    "resume": {"retry_non_idempotent": False, "lease_ttl_s": 15.0},
    "agents": {
        "workspace_roots": ["./workspace"],
        "enabled": [
            "files",
            "documents",
            "memory",
            "email",
            "calendar",
            "web",
            "quotes",
            "writer",
            "math",
            "clock",
        ],
        "documents_min_score": 0.2,
        "quote_endpoint": "",
        "max_goal_chars": 4000,
        "verify_before_dependents": False,
        "require_approval": [],
        "max_file_bytes": 1048576,
        "calendar_path": "calendar.ics",
        "mailbox_path": "",
        "outbox_path": "outbox",
        "email_from": "autoagent@localhost",
        "smtp_host": "",
        "smtp_port": 25,
        "web_allow": [],
        "documents_chunk_chars": 1200,
        "documents_max_file_bytes": 20971520,
    },
    "telemetry": {"otlp_endpoint": ""},
}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def all_keys() -> dict[str, list[str]]:
    """Section -> keys, walked from the dataclasses themselves."""
    return {
        section.name: [f.name for f in dataclasses.fields(getattr(Config(), section.name))]
        for section in dataclasses.fields(Config)
    }


# -- defaults and the shipped file --------------------------------------------------------


def test_load_config_without_path_returns_defaults() -> None:
    assert load_config(env={}) == Config()


def test_defaults_are_the_documented_values() -> None:
    assert config_as_dict(Config(), redact=False) == EXPECTED_DEFAULTS


def test_default_types_are_exact() -> None:
    config = Config()
    assert type(config.server.requests_per_second) is float
    assert type(config.llm.timeout_s) is float
    assert config.agents.enabled[0] == "files"
    assert isinstance(config.agents.enabled, tuple)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = ServerConfig()  # type: ignore[misc]


def test_shipped_config_equals_defaults() -> None:
    assert load_config(SHIPPED_CONFIG, env={}) == Config()


def test_shipped_config_contains_every_key_and_nothing_else() -> None:
    document = tomllib.loads(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    assert {section: list(table) for section, table in document.items()} == all_keys()


def test_shipped_config_documents_every_key_with_a_comment() -> None:
    lines = SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines()
    keys = {key for section in all_keys().values() for key in section}
    for index, line in enumerate(lines):
        if line.split("=")[0].strip() in keys and "=" in line:
            assert lines[index - 1].startswith("#"), f"no comment above {line!r}"


# -- overrides --------------------------------------------------------------------------


def test_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f'[server]\nport = 9000\ntokens = ["{TOKEN_A}", "{TOKEN_B}"]\n[llm]\nprovider = "openai"\n',
    )
    config = load_config(path, env={})
    assert config.server == dataclasses.replace(
        ServerConfig(), port=9000, tokens=(TOKEN_A, TOKEN_B)
    )
    assert config.llm == LLMConfig(provider="openai")
    assert config.store == Config().store


def test_file_accepts_an_integer_for_a_float(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[llm]\ntimeout_s = 5\n")
    timeout = load_config(path, env={}).llm.timeout_s
    assert timeout == 5.0
    assert type(timeout) is float


def test_file_accepts_dotted_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server.port = 0\n")
    assert load_config(path, env={}).server.port == 0


@pytest.mark.parametrize(
    ("name", "raw", "section", "key", "expected"),
    [
        pytest.param(
            "AUTOAGENT_FEATURES__PARALLEL_EXECUTION",
            "false",
            "features",
            "parallel_execution",
            False,
            id="bool",
        ),
        pytest.param("AUTOAGENT_SERVER__PORT", "9001", "server", "port", 9001, id="int"),
        pytest.param("AUTOAGENT_LLM__TIMEOUT_S", "2.5", "llm", "timeout_s", 2.5, id="float"),
        pytest.param("AUTOAGENT_LLM__TIMEOUT_S", "7", "llm", "timeout_s", 7.0, id="int-as-float"),
        pytest.param(
            "AUTOAGENT_AGENTS__ENABLED",
            '["math", "clock"]',
            "agents",
            "enabled",
            ("math", "clock"),
            id="list",
        ),
        pytest.param(
            "AUTOAGENT_LLM__BASE_URL",
            "http://localhost:8000/v1",
            "llm",
            "base_url",
            "http://localhost:8000/v1",
            id="plain-string",
        ),
        pytest.param("AUTOAGENT_SERVER__HOST", "0.0.0.0", "server", "host", "0.0.0.0", id="ip"),
        pytest.param("AUTOAGENT_LLM__MODEL", '"42"', "llm", "model", "42", id="quoted-string"),
        pytest.param("AUTOAGENT_LLM__PROVIDER", "openai", "llm", "provider", "openai", id="enum"),
        pytest.param("autoagent_llm__model", "x", "llm", "model", "gpt-4o-mini", id="lower-prefix"),
        pytest.param("AUTOAGENT_llm__Model", "m", "llm", "model", "m", id="case-insensitive"),
    ],
)
def test_env_overrides_one_key(
    name: str, raw: str, section: str, key: str, expected: object
) -> None:
    config = load_config(env={name: raw})
    value = getattr(getattr(config, section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_env_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[llm]\nmodel = "from-file"\nmax_retries = 1\n')
    config = load_config(path, env={"AUTOAGENT_LLM__MODEL": "from-env"})
    assert (config.llm.model, config.llm.max_retries) == ("from-env", 1)


def test_env_value_with_a_second_line_stays_a_plain_string() -> None:
    config = load_config(env={"AUTOAGENT_LLM__MODEL": '"m"\nmax_retries = 0'})
    assert config.llm.model == '"m"\nmax_retries = 0'
    assert config.llm.max_retries == 4


@pytest.mark.parametrize(
    "name", ["AUTOAGENT_CONFIG", "AUTOAGENT_TOKEN", "AUTOAGENT__X", "OTHER_LLM__MODEL"]
)
def test_env_vars_that_are_not_section_overrides_are_ignored(name: str) -> None:
    assert load_config(env={name: "whatever"}) == Config()


def test_load_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOAGENT_PERFORMANCE__FAISS_NPROBE", "16")
    assert load_config().performance.faiss_nprobe == 16


# -- errors -------------------------------------------------------------------------------

FILE_ERRORS = [
    pytest.param(
        "[servr]\n", "servr", "unknown section 'servr'; did you mean 'server'?", id="section"
    ),
    pytest.param(
        "[zzz]\nport = 1\n",
        "zzz",
        "unknown section 'zzz'; expected one of agents, embeddings, features, llm, "
        "performance, resume, server, store",
        id="section-no-suggestion",
    ),
    pytest.param("server = 1\n", "server", "expected a table, got an integer", id="not-a-table"),
    pytest.param(
        "[llm]\nbase_uri = 'x'\n",
        "llm.base_uri",
        "unknown key 'base_uri'; did you mean 'base_url'?",
        id="key",
    ),
    pytest.param("[llm.extra]\n", "llm.extra", "unknown key 'extra'", id="sub-table"),
    pytest.param(
        "[server]\nport = '80'\n", "server.port", "expected an integer, got a string", id="str-int"
    ),
    pytest.param(
        "[server]\nport = true\n",
        "server.port",
        "expected an integer, got a boolean",
        id="bool-int",
    ),
    pytest.param(
        "[server]\nport = 1.0\n", "server.port", "expected an integer, got a float", id="float-int"
    ),
    pytest.param(
        "[store]\nbackend = 'sqlite'\n",
        "store.backend",
        "expected one of 'lmdb', 'postgres', got 'sqlite'",
        id="unknown-backend",
    ),
    pytest.param(
        "[store]\nbackend = 'postgres'\n",
        "store.url",
        'store.backend = "postgres" needs a PostgreSQL URL',
        id="postgres-without-url",
    ),
    pytest.param(
        "[store]\nbackend = 'postgres'\nurl = ''\n",
        "store.url",
        'store.backend = "postgres" needs a PostgreSQL URL',
        id="postgres-with-empty-url",
    ),
    pytest.param(
        "[store]\nsync = 1\n",
        "store.sync",
        "expected a boolean (true or false), got an integer",
        id="int-bool",
    ),
    pytest.param(
        "[server]\nrequests_per_second = true\n",
        "server.requests_per_second",
        "expected a number, got a boolean",
        id="bool-float",
    ),
    pytest.param(
        "[server]\ntokens = 'abc'\n",
        "server.tokens",
        "expected an array of strings, got a string",
        id="str-list",
    ),
    pytest.param(
        "[server]\ntokens = ['a', 2]\n",
        "server.tokens",
        "item 1: expected a string, got an integer",
        id="list-item",
    ),
    pytest.param(
        "[llm]\nprovider = 'opnai'\n",
        "llm.provider",
        "expected one of 'offline', 'openai', got 'opnai'",
        id="enum",
    ),
    pytest.param(
        "[embeddings]\nprovider = 1\n",
        "embeddings.provider",
        "expected one of 'local', 'openai', got an integer",
        id="enum-type",
    ),
    pytest.param(
        "[embeddings]\nlocal_runtime = 'onnx'\n",
        "embeddings.local_runtime",
        "expected one of 'auto', 'numpy', 'torch', got 'onnx'",
        id="enum-local-runtime",
    ),
    pytest.param(
        "[server]\nport = 65536\n",
        "server.port",
        "must be at most 65535, got 65536",
        id="port-high",
    ),
    pytest.param(
        "[server]\nport = -1\n", "server.port", "must be at least 0, got -1", id="port-low"
    ),
    pytest.param(
        "[performance]\nmax_parallel_steps = 0\n",
        "performance.max_parallel_steps",
        "must be greater than 0, got 0",
        id="count-zero",
    ),
    pytest.param(
        "[performance]\ngc_young_threshold = 3000000000\n",
        "performance.gc_young_threshold",
        "must be at most 10000000, got 3000000000",
        id="gc-threshold-high",
    ),
    pytest.param(
        "[performance]\nswitch_interval_ms = -1\n",
        "performance.switch_interval_ms",
        "must be at least 0, got -1",
        id="switch-interval-negative",
    ),
    pytest.param(
        "[llm]\ntimeout_s = 0.0\n",
        "llm.timeout_s",
        "must be greater than 0, got 0.0",
        id="float-zero",
    ),
    pytest.param(
        "[llm]\nmax_retries = -1\n", "llm.max_retries", "must be at least 0, got -1", id="negative"
    ),
    pytest.param("[server]\nhost = ''\n", "server.host", "must not be empty", id="empty-string"),
    pytest.param(
        "[store]\ndata_dir = 2024-01-01\n",
        "store.data_dir",
        "expected a string, got date",
        id="date",
    ),
]


@pytest.mark.parametrize(("text", "key", "problem"), FILE_ERRORS)
def test_bad_file_value_names_key_and_file(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (info.value.key, info.value.source) == (key, str(path))
    assert problem in info.value.problem
    assert str(info.value) == f"{path}: {key}: {info.value.problem}"


ENV_ERRORS = [
    pytest.param(
        "AUTOAGENT_SERVR__PORT",
        "1",
        "servr.port",
        "unknown section 'servr'; did you mean 'server'?",
        id="section",
    ),
    pytest.param(
        "AUTOAGENT_LLM__BASE_URI",
        "x",
        "llm.base_uri",
        "unknown key 'base_uri'; did you mean 'base_url'?",
        id="key",
    ),
    pytest.param(
        "AUTOAGENT_LLM__BASE__URL", "x", "llm.base__url", "unknown key 'base__url'", id="extra-sep"
    ),
    pytest.param(
        "AUTOAGENT_SERVER__PORT",
        "abc",
        "server.port",
        "expected an integer, got a string",
        id="int",
    ),
    pytest.param(
        "AUTOAGENT_FEATURES__STEP_BATCHING",
        "yes",
        "features.step_batching",
        "expected a boolean (true or false), got a string",
        id="bool",
    ),
    pytest.param(
        "AUTOAGENT_AGENTS__ENABLED",
        "files,math",
        "agents.enabled",
        "expected an array of strings, got a string",
        id="list",
    ),
    pytest.param(
        "AUTOAGENT_LLM__PROVIDER",
        "anthropic",
        "llm.provider",
        "expected one of 'offline', 'openai', got 'anthropic'",
        id="enum",
    ),
    pytest.param(
        "AUTOAGENT_SERVER__PORT",
        "70000",
        "server.port",
        "must be at most 65535, got 70000",
        id="range",
    ),
    pytest.param("AUTOAGENT_LLM__MODEL", "", "llm.model", "must not be empty", id="empty"),
]


@pytest.mark.parametrize(("name", "raw", "key", "problem"), ENV_ERRORS)
def test_bad_env_override_names_key_and_variable(
    name: str, raw: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={name: raw})
    assert (info.value.key, info.value.source) == (key, name)
    assert problem in info.value.problem
    assert str(info.value) == f"{name}: {key}: {info.value.problem}"


def test_error_messages_do_not_echo_secret_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\ntokens = 's3cret-token'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "s3cret" not in str(info.value)


def test_invalid_toml_names_the_file_and_the_parser_message(tmp_path: Path) -> None:
    text = "[server]\nport = \n"
    path = write_config(tmp_path, text)
    with pytest.raises(tomllib.TOMLDecodeError) as parse:
        tomllib.loads(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: not valid TOML: {parse.value}"
    assert (info.value.key, info.value.source) == (None, str(path))
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"
    assert info.value.source == str(path)


def test_file_that_is_not_utf8_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[server]\nhost = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: config file is not UTF-8: ")


def test_config_error_is_a_server_error() -> None:
    assert issubclass(ConfigError, ServerError)
    assert issubclass(ServerError, AutoagentError)


# -- data directory and config path -----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "flag", "expected"),
    [
        pytest.param({}, None, "file", id="file"),
        pytest.param({"AUTOAGENT_STORE__DATA_DIR": "section"}, None, "section", id="env-key"),
        pytest.param(
            {"AUTOAGENT_STORE__DATA_DIR": "section", "AUTOAGENT_DATA_DIR": "short"},
            None,
            "short",
            id="env-shorthand",
        ),
        pytest.param({"AUTOAGENT_DATA_DIR": ""}, None, "file", id="empty-shorthand-unset"),
        pytest.param({"AUTOAGENT_DATA_DIR": "short"}, "flag", "flag", id="flag"),
        pytest.param({}, Path("flag"), "flag", id="flag-path"),
    ],
)
def test_data_dir_precedence(
    tmp_path: Path, env: dict[str, str], flag: Path | str | None, expected: str
) -> None:
    path = write_config(tmp_path, '[store]\ndata_dir = "file"\n')
    assert load_config(path, env, data_dir=flag).store.data_dir == expected


def test_data_dir_shorthand_is_a_plain_path_not_toml() -> None:
    config = load_config(env={"AUTOAGENT_DATA_DIR": "2024-01-01"})
    assert config.store.data_dir == "2024-01-01"


def test_empty_data_dir_flag_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, data_dir="")
    assert str(info.value) == "--data-dir: store.data_dir: must not be empty"


def test_data_path_is_a_path() -> None:
    config = load_config(env={}, data_dir="~/autoagent-data")
    assert config.store.data_path == Path.home() / "autoagent-data"
    assert Config().store.data_path == Path("data")
    assert Config().agents.workspace_paths == (Path("workspace"),)


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        pytest.param("a.toml", {"AUTOAGENT_CONFIG": "b.toml"}, Path("a.toml"), id="flag-wins"),
        pytest.param(None, {"AUTOAGENT_CONFIG": "b.toml"}, Path("b.toml"), id="env"),
        pytest.param(None, {}, None, id="none"),
        pytest.param(None, {"AUTOAGENT_CONFIG": ""}, None, id="empty-env-unset"),
    ],
)
def test_resolve_config_path(flag: str | None, env: dict[str, str], expected: Path | None) -> None:
    assert resolve_config_path(flag, env) == expected


def test_resolved_path_loads(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[performance]\nsession_window = 5\n")
    resolved = resolve_config_path(None, {"AUTOAGENT_CONFIG": str(path)})
    assert load_config(resolved, env={}).performance.session_window == 5


# -- output -------------------------------------------------------------------------------


def test_config_as_dict_redacts_tokens_by_default() -> None:
    config = load_config(env={"AUTOAGENT_SERVER__TOKENS": f'["{TOKEN_A}", "{TOKEN_B}"]'})
    assert config_as_dict(config)["server"]["tokens"] == ["<redacted>", "<redacted>"]
    assert config_as_dict(config, redact=False)["server"]["tokens"] == [TOKEN_A, TOKEN_B]


def test_optional_text_key_accepts_empty_string_from_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[agents]\nquote_endpoint = ""\n')
    assert load_config(path, env={}).agents.quote_endpoint == ""


def test_optional_text_key_takes_a_url_from_env() -> None:
    env = {"AUTOAGENT_AGENTS__QUOTE_ENDPOINT": "http://127.0.0.1:9/quotes"}
    assert load_config(env=env).agents.quote_endpoint == "http://127.0.0.1:9/quotes"


def test_postgres_backend_takes_its_url_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[store]\nbackend = 'postgres'\n")
    env = {"AUTOAGENT_STORE__URL": "postgresql://autoagent@db/autoagent"}
    store = load_config(path, env=env).store
    assert (store.backend, store.url) == ("postgres", "postgresql://autoagent@db/autoagent")


def test_postgres_backend_set_from_the_environment_without_url_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"AUTOAGENT_STORE__BACKEND": "postgres"})
    assert str(info.value) == (
        'AUTOAGENT_STORE__BACKEND: store.url: store.backend = "postgres" needs a PostgreSQL URL'
    )


def test_config_as_dict_redacts_the_store_url() -> None:
    env = {"AUTOAGENT_STORE__BACKEND": "postgres", "AUTOAGENT_STORE__URL": "postgresql://u:pw@h/db"}
    config = load_config(env=env)
    assert config_as_dict(config)["store"]["url"] == "<redacted>"
    assert config_as_dict(config, redact=False)["store"]["url"] == "postgresql://u:pw@h/db"
