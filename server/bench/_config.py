"""The configuration of each server `autoagent bench` starts, written as a TOML file.

Both servers start from the same base configuration (the bench's own `--config` and
environment, or the defaults) and differ only in `[features]`: every flag off for the
sequential baseline, every flag on for the optimized server. The bench then points
them at its own loopback services and temporary directories:

- `[llm]` and `[embeddings]` go to the simulator (`provider = "openai"`), whose model
  names are used; the client-side RPM/TPM budgets stay as configured (the shipped
  defaults unless the bench's `--config` says otherwise): the bench measures what a
  user who runs the server gets, limiter included;
- `[agents]` get a workspace of their own, the bench's quote endpoint, and loopback on
  `web_allow` so `web.fetch` can read the bench's pages;
- `[server]` listens on 127.0.0.1, port 0, no tokens, with room for the clients;
- `[store]` keeps its data in the phase's directory (durability as configured).

The file is checked by loading it back before a server is started, so a mistake shows
here, with the file's name, rather than as a server that exits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.offline import DEFAULT_MODELS
from server.config import Config, FeaturesConfig, config_as_dict, load_config

SIM_KEY_ENV = "AUTOAGENT_BENCH_SIM_KEY"
SIM_KEY = "sk-autoagent-bench"
CHAT_MODEL = DEFAULT_MODELS[0]
EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_DIM = 1536
SPARE_CONNECTIONS = 16
FEATURE_FLAGS = tuple(f.name for f in dataclasses.fields(FeaturesConfig))


@dataclasses.dataclass(frozen=True, slots=True)
class PhasePaths:
    """Where one server keeps its data and its workspace."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    simulator_url: str
    world_url: str


def phase_settings(
    base: Config, optimized: bool, paths: PhasePaths, endpoints: Endpoints, concurrency: int
) -> dict[str, dict[str, Any]]:
    """The whole configuration of one server, as plain nested data."""
    settings = config_as_dict(base, redact=False)
    settings["features"] = dict.fromkeys(FEATURE_FLAGS, optimized)
    settings["server"] |= {
        "host": "127.0.0.1",
        "port": 0,
        "tokens": [],
        "max_connections": max(base.server.max_connections, concurrency + SPARE_CONNECTIONS),
    }
    settings["store"]["data_dir"] = str(paths.data)
    settings["llm"] |= {
        "provider": "openai",
        "base_url": endpoints.simulator_url,
        "api_key_env": SIM_KEY_ENV,
        "model": CHAT_MODEL,
    }
    settings["embeddings"] |= {"provider": "openai", "model": EMBEDDING_MODEL}
    settings["agents"] |= {
        "workspace_roots": [str(paths.workspace)],
        "quote_endpoint": f"{endpoints.world_url}/quotes",
        "web_allow": sorted({*base.agents.web_allow, "127.0.0.1"}),
    }
    return settings


def to_toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """Sections of strings, numbers, booleans and lists of them, as TOML text."""
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def write_phase_config(settings: Mapping[str, Mapping[str, Any]], paths: PhasePaths) -> Config:
    """Write the file and load it back the way the server will (no environment)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.workspace.mkdir(exist_ok=True)
    paths.config_file.write_text(to_toml(settings))
    return load_config(paths.config_file, env={})
