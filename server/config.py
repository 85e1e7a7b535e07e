"""The server's configuration: one frozen, typed object, checked in full at start-up.

Layers, each overriding the one before: the defaults embedded below, the TOML file
(`--config` or `AUTOAGENT_CONFIG`), `AUTOAGENT_<SECTION>__<KEY>` environment variables,
`AUTOAGENT_DATA_DIR`, and last the `--data-dir` flag. Every value of every layer goes
through one field-walker driven by the dataclasses' type hints and field metadata, so an
unknown section or key, a wrong type or an out-of-range number fails with a ConfigError
naming the key and where the value came from, instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import os
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args, get_origin, get_type_hints

from server._access import parse_origin, token_problem
from server.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DATA_DIR_ENV",
    "ENV_PREFIX",
    "AgentsConfig",
    "Config",
    "EmbeddingsConfig",
    "EmbeddingsProviderName",
    "FeaturesConfig",
    "LLMConfig",
    "LLMProviderName",
    "PerformanceConfig",
    "PrincipalConfig",
    "ResumeConfig",
    "ServerConfig",
    "StoreBackendName",
    "StoreConfig",
    "TelemetryConfig",
    "config_as_dict",
    "load_config",
    "resolve_config_path",
]

ENV_PREFIX = "AUTOAGENT_"
CONFIG_ENV = "AUTOAGENT_CONFIG"
DATA_DIR_ENV = "AUTOAGENT_DATA_DIR"
DATA_DIR_FLAG = "--data-dir"

StoreBackendName = Literal["lmdb", "postgres"]
LLMProviderName = Literal["offline", "openai"]
EmbeddingsProviderName = Literal["local", "openai"]
LocalRuntimeName = Literal["auto", "numpy", "torch"]

# Field metadata read by the walker: numeric bounds, "secret" for values that
# config_as_dict redacts, and "each": a check of every item of an array (it returns
# the problem, or None). Read-only so no field can change another's rules.
_POSITIVE = MappingProxyType({"gt": 0})
_NON_NEGATIVE = MappingProxyType({"ge": 0})
_PORT = MappingProxyType({"ge": 0, "le": 65535})
_OPTIONAL_TEXT = MappingProxyType({"allow_empty": True})
_CHUNK_CHARS = MappingProxyType({"ge": 100})
_COSINE = MappingProxyType({"ge": -1, "le": 1})
# Python's gc takes a C int; beyond ten million the young generation is no longer young.
_GC_THRESHOLD = MappingProxyType({"ge": 0, "le": 10_000_000})
_SWITCH_INTERVAL_MS = MappingProxyType({"ge": 0, "le": 1000})
_COMMIT_LINGER_MS = MappingProxyType({"ge": 0, "le": 1000})
_PROJECTION_LINGER_MS = MappingProxyType({"ge": 0, "le": 10000})
_REDACTED = "<redacted>"
# A URL may carry a password: optional, and redacted in `config_as_dict`.
_SECRET_OPTIONAL_TEXT = MappingProxyType({"allow_empty": True, "secret": True})


def _origin_problem(origin: str) -> str | None:
    if parse_origin(origin) is None:
        return "expected an origin like 'https://console.example' or 'http://host:8080'"
    return None


_TOKENS = MappingProxyType({"secret": True, "each": token_problem})
_ORIGINS = MappingProxyType({"each": _origin_problem})


@dataclass(frozen=True)
class PrincipalConfig:
    """One `[[server.principals]]` entry: who a token stands for.

    The token itself is read from the environment variable `token_env` at start-up, so
    no secret is written in the file; `role` is `admin` (every stream and run) or `user`
    (its own sessions, runs and memory).
    """

    name: str
    role: Literal["admin", "user"]
    token_env: str


PRINCIPAL_KEYS = ("name", "role", "token_env")


@dataclass(frozen=True)
class ServerConfig:
    """[server]: where the WebSocket API listens and what it lets through."""

    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata=_PORT)
    tokens: tuple[str, ...] = field(default=(), metadata=_TOKENS)
    principals: tuple[PrincipalConfig, ...] = ()
    allowed_origins: tuple[str, ...] = field(default=(), metadata=_ORIGINS)
    console: bool = True
    max_frame_bytes: int = field(default=1048576, metadata=_POSITIVE)
    requests_per_second: float = field(default=20.0, metadata=_POSITIVE)
    max_connections: int = field(default=100, metadata=_POSITIVE)
    max_connections_per_token: int = field(default=50, metadata=_POSITIVE)
    max_runs_per_session: int = field(default=4, metadata=_POSITIVE)
    slow_client_timeout_s: float = field(default=10.0, metadata=_POSITIVE)
    hello_timeout_s: float = field(default=10.0, metadata=_POSITIVE)
    idle_timeout_s: float = field(default=300.0, metadata=_POSITIVE)
    metrics_public: bool = False
    node_id: str = field(default="", metadata=_OPTIONAL_TEXT)

    def node_name(self, data_dir: Path) -> str:
        """This node's id for run leases: `node_id`, or `<host name>:<data dir>` (unique
        among running nodes, since one data dir holds one server; the same after a
        restart, so a restarted node takes its own runs back at once)."""
        if self.node_id:
            return self.node_id
        return f"{socket.gethostname()}:{data_dir.expanduser().resolve()}"


@dataclass(frozen=True)
class StoreConfig:
    """[store]: the event log (LMDB in the data dir, or a PostgreSQL database) and the
    data dir (projections, keys)."""

    backend: StoreBackendName = "lmdb"
    url: str = field(default="", metadata=_SECRET_OPTIONAL_TEXT)
    data_dir: str = "./data"
    sync: bool = True
    map_size_mb: int = field(default=1024, metadata=_POSITIVE)
    compress_over_bytes: int = field(default=4096, metadata=_NON_NEGATIVE)
    max_event_bytes: int = field(default=4194304, metadata=_POSITIVE)
    keys_dir: str = field(default="", metadata=_OPTIONAL_TEXT)
    watch_interval_s: float = field(default=0.05, metadata=_POSITIVE)
    commit_linger_ms: float = field(default=5.0, metadata=_COMMIT_LINGER_MS)

    @property
    def data_path(self) -> Path:
        """The data directory as a Path (`~` expanded; relative to the working directory)."""
        return Path(self.data_dir).expanduser()

    @property
    def keys_path(self) -> Path:
        """Where the sealing keys live: `keys_dir`, or `<data_dir>/keys` when empty."""
        return Path(self.keys_dir).expanduser() if self.keys_dir else self.data_path / "keys"


@dataclass(frozen=True)
class LLMConfig:
    """[llm]: which language model answers, and how hard we may call it."""

    provider: LLMProviderName = "offline"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    model: str = "gpt-4o-mini"
    timeout_s: float = field(default=30.0, metadata=_POSITIVE)
    max_retries: int = field(default=4, metadata=_NON_NEGATIVE)
    rpm_limit: int = field(default=500, metadata=_POSITIVE)
    tpm_limit: int = field(default=200000, metadata=_POSITIVE)
    max_parallel_calls: int = field(default=8, metadata=_POSITIVE)


@dataclass(frozen=True)
class EmbeddingsConfig:
    """[embeddings]: how memory and documents are turned into vectors."""

    provider: EmbeddingsProviderName = "local"
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = field(default=64, metadata=_POSITIVE)
    local_runtime: LocalRuntimeName = "auto"


@dataclass(frozen=True)
class PerformanceConfig:
    """[performance]: parallelism, windows and cache sizes."""

    max_parallel_steps: int = field(default=16, metadata=_POSITIVE)
    session_window: int = field(default=20, metadata=_POSITIVE)
    snapshot_every: int = field(default=10000, metadata=_POSITIVE)
    projection_linger_ms: float = field(default=50.0, metadata=_PROJECTION_LINGER_MS)
    faiss_ivf_threshold: int = field(default=10000, metadata=_POSITIVE)
    faiss_nprobe: int = field(default=8, metadata=_POSITIVE)
    prompt_cache_size: int = field(default=128, metadata=_NON_NEGATIVE)
    step_timeout_s: float = field(default=60.0, metadata=_POSITIVE)
    gc_young_threshold: int = field(default=50000, metadata=_GC_THRESHOLD)
    gc_freeze: bool = True
    switch_interval_ms: float = field(default=0.5, metadata=_SWITCH_INTERVAL_MS)


@dataclass(frozen=True)
class FeaturesConfig:
    """[features]: optimisations; all off is the sequential baseline benchmarks compare to."""

    parallel_execution: bool = True
    async_planner: bool = True
    background_verification: bool = True
    step_batching: bool = True
    streaming_plan: bool = True
    batch_embeddings: bool = True
    compact_tool_catalog: bool = True
    tool_selection: bool = True
    compact_history: bool = True
    compact_plan_steps: bool = True
    intent_in_plan: bool = True


@dataclass(frozen=True)
class ResumeConfig:
    """[resume]: what happens to interrupted work after a restart."""

    retry_non_idempotent: bool = False
    lease_ttl_s: float = field(default=15.0, metadata=_POSITIVE)


@dataclass(frozen=True)
class TelemetryConfig:
    """[telemetry]: where runs' traces go (OTLP/HTTP); empty: no export."""

    otlp_endpoint: str = field(default="", metadata=_OPTIONAL_TEXT)


@dataclass(frozen=True)
class AgentsConfig:
    """[agents]: which agents run and where they may touch files."""

    workspace_roots: tuple[str, ...] = ("./workspace",)
    enabled: tuple[str, ...] = (
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
    )
    quote_endpoint: str = field(default="", metadata=_OPTIONAL_TEXT)
    max_goal_chars: int = field(default=4000, metadata=_POSITIVE)
    verify_before_dependents: bool = False
    require_approval: tuple[str, ...] = ()
    max_file_bytes: int = field(default=1048576, metadata=_POSITIVE)
    calendar_path: str = "calendar.ics"
    mailbox_path: str = field(default="", metadata=_OPTIONAL_TEXT)
    outbox_path: str = "outbox"
    email_from: str = "autoagent@localhost"
    smtp_host: str = field(default="", metadata=_OPTIONAL_TEXT)
    smtp_port: int = field(default=25, metadata=_PORT)
    web_allow: tuple[str, ...] = ()
    documents_chunk_chars: int = field(default=1200, metadata=_CHUNK_CHARS)
    documents_max_file_bytes: int = field(default=20971520, metadata=_POSITIVE)
    documents_min_score: float = field(default=0.2, metadata=_COSINE)

    @property
    def workspace_paths(self) -> tuple[Path, ...]:
        """The workspace roots as Paths (`~` expanded; relative to the working directory)."""
        return tuple(Path(root).expanduser() for root in self.workspace_roots)


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per TOML section; passed explicitly, never global."""

    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)


# Section name -> section dataclass, read from Config's own fields so the two cannot drift.
_SECTIONS: dict[str, Any] = get_type_hints(Config)


# -- public API ---------------------------------------------------------------------------


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    data_dir: Path | str | None = None,
) -> Config:
    """Build the Config the server runs with: defaults < file < environment < `--data-dir`.

    `path` None means the embedded defaults only; `env` defaults to `os.environ`. Everything
    is checked here, so a typo stops start-up instead of being ignored.
    """
    environ = os.environ if env is None else env
    settings = [
        *(_file_settings(path) if path is not None else []),
        *_env_settings(environ),
        *_data_dir_settings(environ, data_dir),
    ]
    return _check_store(_apply(Config(), settings), settings)


def resolve_config_path(
    flag: str | Path | None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to load: the `--config` flag, else `AUTOAGENT_CONFIG`, else None.

    An empty `AUTOAGENT_CONFIG` counts as unset, as shells make that easy to do by accident.
    """
    if flag is not None:
        return Path(flag).expanduser()
    value = (os.environ if env is None else env).get(CONFIG_ENV)
    return Path(value).expanduser() if value else None


def config_as_dict(config: Config, *, redact: bool = True) -> dict[str, dict[str, Any]]:
    """Plain nested dict of the config (lists, not tuples) for `autoagent stats` and debug output.

    Secret values (the auth tokens) are replaced by a marker unless `redact` is False, so
    the output can go to logs safely.
    """
    return {f.name: _section_as_dict(getattr(config, f.name), redact) for f in fields(config)}


# -- sources: each turns one layer into a list of settings ------------------------------


@dataclass(frozen=True)
class _Setting:
    """One value for one key, remembering where it came from for error messages."""

    section: str
    key: str
    value: object
    source: str

    @property
    def dotted(self) -> str:
        """`section.key`, the name errors use."""
        return f"{self.section}.{self.key}"


def _file_settings(path: Path) -> list[_Setting]:
    """Every key of a TOML file; sections are checked here so an empty unknown one fails too."""
    settings: list[_Setting] = []
    for section, table in _read_toml(path).items():
        _check_section_table(section, table, str(path))
        settings.extend(_Setting(section, key, value, str(path)) for key, value in table.items())
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse the file, turning every way that can fail into one ConfigError line naming it."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror or exc}", source=str(path)
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8: {exc}", source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from exc
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", source=str(path)) from None


def _check_section_table(section: str, table: object, source: str) -> None:
    """A top-level TOML entry must be a known section holding a table."""
    if section not in _SECTIONS:
        raise ConfigError(_unknown("section", section, _SECTIONS), source=source, key=section)
    if not isinstance(table, dict):
        raise ConfigError(f"expected a table, got {_kind(table)}", source=source, key=section)


def _env_settings(env: Mapping[str, str]) -> list[_Setting]:
    """`AUTOAGENT_<SECTION>__<KEY>` variables, sorted so the outcome never depends on order.

    Variables without `__` after the prefix (AUTOAGENT_CONFIG, AUTOAGENT_TOKEN...) are not
    overrides; those with it must name a real key, checked when the setting is applied.
    """
    settings: list[_Setting] = []
    for name in sorted(env):
        rest = name.removeprefix(ENV_PREFIX)
        if rest != name and "__" in rest:
            section, _, key = rest.lower().partition("__")
            settings.append(_Setting(section, key, _parse_env_value(env[name]), name))
    return settings


def _parse_env_value(raw: str) -> object:
    """Read `raw` as one TOML value (`true`, `8`, `["a", "b"]`), else as the plain string.

    Text that parses into more than one key (an embedded newline) is taken as a string, so
    a variable can never smuggle in a second setting.
    """
    try:
        document = tomllib.loads(f"v = {raw}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw
    return document["v"] if len(document) == 1 else raw


def _data_dir_settings(env: Mapping[str, str], flag: Path | str | None) -> list[_Setting]:
    """`AUTOAGENT_DATA_DIR`, then the `--data-dir` flag, taken as plain paths; the flag wins.

    Both come after the section overrides, so the shorthand beats `AUTOAGENT_STORE__DATA_DIR`;
    an empty `AUTOAGENT_DATA_DIR` counts as unset.
    """
    settings: list[_Setting] = []
    if env.get(DATA_DIR_ENV):
        settings.append(_Setting("store", "data_dir", env[DATA_DIR_ENV], DATA_DIR_ENV))
    if flag is not None:
        settings.append(_Setting("store", "data_dir", str(flag), DATA_DIR_FLAG))
    return settings


def _check_store(config: Config, settings: list[_Setting]) -> Config:
    """Checks across keys, once every layer is applied: postgres needs a URL."""
    if config.store.backend == "postgres" and not config.store.url:
        sources = [s.source for s in settings if s.dotted in ("store.url", "store.backend")]
        raise ConfigError(
            'store.backend = "postgres" needs a PostgreSQL URL',
            source=sources[-1] if sources else "defaults",
            key="store.url",
        )
    return config


# -- the field-walker: check each setting against its dataclass field ------------------


class _Invalid(Exception):
    """A value that does not fit its field; the caller adds the key and the source."""


def _apply(config: Config, settings: Iterable[_Setting]) -> Config:
    """Apply settings in order, later ones overriding earlier ones."""
    for setting in settings:
        config = _apply_one(config, setting)
    return config


def _apply_one(config: Config, setting: _Setting) -> Config:
    """Check one setting against its field and return a new Config with it in place."""
    spec, hint = _field_of(setting)
    value = _checked(setting, spec, hint)
    section = replace(getattr(config, setting.section), **{setting.key: value})
    return replace(config, **{setting.section: section})


def _field_of(setting: _Setting) -> tuple[Field[Any], Any]:
    """The dataclass field and type a setting targets; an unknown section or key fails."""
    if setting.section not in _SECTIONS:
        problem = _unknown("section", setting.section, _SECTIONS)
        raise ConfigError(problem, source=setting.source, key=setting.dotted)
    known = _fields_of(_SECTIONS[setting.section])
    if setting.key not in known:
        problem = _unknown("key", setting.key, known)
        raise ConfigError(problem, source=setting.source, key=setting.dotted)
    return known[setting.key]


@functools.cache
def _fields_of(section_class: type[Any]) -> dict[str, tuple[Field[Any], Any]]:
    """Key -> (field, resolved type hint) of one section dataclass."""
    hints = get_type_hints(section_class)
    return {spec.name: (spec, hints[spec.name]) for spec in fields(section_class)}


def _checked(setting: _Setting, spec: Field[Any], hint: Any) -> object:
    """The setting's value converted to the field's type and within its bounds."""
    try:
        if setting.value == "" and spec.metadata.get("allow_empty"):
            return ""
        value = _convert(setting.value, hint)
        _check_bounds(value, spec.metadata)
        _check_each(value, spec.metadata)
    except _Invalid as exc:
        raise ConfigError(str(exc), source=setting.source, key=setting.dotted) from None
    return value


def _convert(value: object, hint: Any) -> object:
    """`value` as the type `hint` names (list -> tuple, int -> float), or raise _Invalid."""
    if get_origin(hint) is Literal:
        return _convert_choice(value, get_args(hint))
    if get_origin(hint) is tuple:
        return _convert_items(value, get_args(hint)[0])
    if hint is PrincipalConfig:
        return _convert_principal(value)
    if hint is float:
        return _convert_float(value)
    if hint in _WANTED:
        return _convert_exact(value, hint)
    raise TypeError(f"config field type {hint!r} is not supported by the loader")


def _convert_principal(value: object) -> PrincipalConfig:
    """A `{name, role, token_env}` table; the name may not contain ':' (it names keys)."""
    if type(value) is not dict:
        raise _Invalid(f"expected a table {{name, role, token_env}}, got {_kind(value)}")
    unknown = sorted(set(value) - set(PRINCIPAL_KEYS))
    if unknown:
        raise _Invalid(_unknown("principal key", unknown[0], PRINCIPAL_KEYS))
    missing = [key for key in PRINCIPAL_KEYS if key not in value]
    if missing:
        raise _Invalid(f"a principal needs {', '.join(missing)}")
    for key in ("name", "token_env"):
        if type(value[key]) is not str or not value[key].strip():
            raise _Invalid(f"principal {key} must be a non-empty string")
    name = value["name"]
    if ":" in name or len(name) > 128 or not name.isprintable():
        raise _Invalid(f"principal name {name!r} must be printable, at most 128 characters, no ':'")
    role = _convert_choice(value["role"], ("admin", "user"))
    return PrincipalConfig(name, role, value["token_env"])  # type: ignore[arg-type]


def _convert_exact(value: object, hint: type[Any]) -> object:
    """str, int or bool, exactly: a bool is not an int, and a string may not be empty."""
    if type(value) is not hint:
        raise _Invalid(f"expected {_WANTED[hint]}, got {_kind(value)}")
    if value == "":
        raise _Invalid("must not be empty")
    return value


def _convert_float(value: object) -> float:
    """A finite float, or an int taken as one (`timeout_s = 30`); never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected {_WANTED[float]}, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Invalid(f"expected a finite number, got {value!r}"[:200])
    return number


def _convert_choice(value: object, choices: tuple[object, ...]) -> object:
    """One of an enumerated set of strings, such as a provider name."""
    if value not in choices or type(value) is not str:
        allowed = ", ".join(repr(choice) for choice in choices)
        got = repr(value) if isinstance(value, str) else _kind(value)
        raise _Invalid(f"expected one of {allowed}, got {got}")
    return value


def _convert_items(value: object, item_hint: Any) -> tuple[object, ...]:
    """A TOML array, each item checked, frozen into a tuple."""
    if type(value) is not list:
        wanted = _WANTED_ITEMS.get(item_hint, "values")
        raise _Invalid(f"expected an array of {wanted}, got {_kind(value)}")
    return tuple(_convert_item(index, item, item_hint) for index, item in enumerate(value))


def _convert_item(index: int, item: object, item_hint: Any) -> object:
    """One array item, its error saying which one."""
    try:
        return _convert(item, item_hint)
    except _Invalid as exc:
        raise _Invalid(f"item {index}: {exc}") from None


_BOUNDS: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
    ("gt", operator.gt, "greater than"),
    ("ge", operator.ge, "at least"),
    ("le", operator.le, "at most"),
)


def _check_bounds(value: object, metadata: Mapping[str, object]) -> None:
    """Numeric limits from field metadata: counts and sizes positive, ports 0-65535."""
    for name, within, words in _BOUNDS:
        limit = metadata.get(name)
        if limit is not None and not within(value, limit):
            raise _Invalid(f"must be {words} {limit}, got {value!r}")


def _check_each(value: object, metadata: Mapping[str, object]) -> None:
    """The field's own check of every array item, such as a token's minimum length."""
    check = metadata.get("each")
    if not callable(check) or not isinstance(value, tuple):
        return
    for index, item in enumerate(value):
        problem = check(item)
        if problem is not None:
            raise _Invalid(f"item {index}: {problem}")


# -- messages and output ------------------------------------------------------------------

_WANTED: dict[object, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean (true or false)",
}

_WANTED_ITEMS: dict[object, str] = {str: "strings", int: "integers", float: "numbers"}

_TOML_KINDS: dict[type[Any], str] = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _kind(value: object) -> str:
    """The TOML word for a value's type; values themselves stay out of messages (tokens)."""
    return _TOML_KINDS.get(type(value), type(value).__name__)


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    """'unknown key' with the closest real name, or the list of real names."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "expected one of " + ", ".join(names)
    return f"unknown {what} {name!r}; {hint}"


def _section_as_dict(section: Any, redact: bool) -> dict[str, Any]:
    """One section as a plain dict, secrets replaced when redacting."""
    return {
        spec.name: _plain(getattr(section, spec.name), redact and "secret" in spec.metadata)
        for spec in fields(section)
    }


def _plain(value: object, secret: bool) -> object:
    """Tuples back to lists (as in TOML and JSON), secret values to a marker."""
    if isinstance(value, tuple):
        return [_plain(item, secret) for item in value]
    if isinstance(value, PrincipalConfig):
        return {key: getattr(value, key) for key in PRINCIPAL_KEYS}
    return _REDACTED if secret else value
