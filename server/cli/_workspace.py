"""Where the workspace lives, and making it exist before a command's tools need it.

A relative `agents.workspace_roots` entry is resolved against the data dir's parent,
not the working directory: `serve`, `run` and `documents` started from anywhere with
the same data dir agree on one workspace, and it sits beside the data it belongs to
(the default `./data` and `./workspace` are siblings). Commands whose tools touch
files create missing roots, so a first "index the documents in docs" finds a folder to
put `docs` in rather than an error about the root.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from server.config import Config
from server.errors import InputError


def anchored_workspace(config: Config) -> Config:
    """`config` with every workspace root absolute: relative ones against the data dir's
    parent (`~` expanded first)."""
    base = config.store.data_path.absolute().parent
    roots = tuple(str(_anchored(root, base)) for root in config.agents.workspace_paths)
    return dataclasses.replace(
        config, agents=dataclasses.replace(config.agents, workspace_roots=roots)
    )


def _anchored(root: Path, base: Path) -> Path:
    return root if root.is_absolute() else base / root


def ensure_workspace(config: Config) -> list[Path]:
    """Create the workspace roots that do not exist yet; the ones created, in order."""
    created = []
    for root in config.agents.workspace_paths:
        if root.is_dir():
            continue
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise InputError(
                f"workspace root {root} exists but is not a folder (agents.workspace_roots)"
            ) from None
        except OSError as exc:
            raise InputError(
                f"cannot create the workspace root {root}: {exc.strerror} (agents.workspace_roots)"
            ) from exc
        created.append(root)
    return created
