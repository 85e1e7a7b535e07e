"""`autoagent replay [--projection NAME] [--verify]`.

Without --verify: rebuild the projections from position 1 (reading through the hash
chain check) in memory, then swap each into the on-disk state in one transaction; a
running server notices its checkpoint moved and reloads. With --verify: rebuild each
projection up to its live checkpoint and compare key for key; exit 1 on a difference.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TextIO

from events import EventLog
from projections import (
    Difference,
    Projection,
    SnapshottingProjection,
    projection_factories,
    rebuild,
    verify,
)
from server._render import Progress, dumps
from server._views import (
    memory_keys,
    memory_options,
    open_base_state,
    open_configured_log,
    open_configured_state,
    state_location,
)
from server.config import Config
from server.errors import InputError

Factories = dict[str, Callable[[], Projection]]


def replay(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    factories = projection_factories(
        config.performance.session_window,
        keys=memory_keys(config, readonly=True),
        memory=memory_options(config),
    )
    if args.projection is not None and args.projection not in factories:
        raise InputError(f"unknown projection {args.projection!r}; known: {', '.join(factories)}")
    selected = {n: f for n, f in factories.items() if args.projection in (None, n)}
    log = open_configured_log(config)
    try:
        if args.verify:
            return _verify(config, log, selected, args, out)
        return _rebuild(config, log, selected, out)
    finally:
        log.close()


def _verify(
    config: Config, log: EventLog, selected: Factories, args: argparse.Namespace, out: TextIO
) -> int:
    live = open_base_state(config)
    if live is None:
        raise InputError(f"{state_location(config)}: no projection state yet, nothing to verify")
    try:
        differences = verify(log, live, selected, progress=lambda n: Progress(f"verify {n}").update)
    finally:
        live.close()
    if args.json:
        out.write(dumps([_diff(d) for d in differences]) + "\n")
    for difference in differences if not args.json else []:
        out.write(
            f"DIFFERENT {difference.projection} {difference.key}:\n"
            f"  live:    {_clip(dumps(difference.live))}\n"
            f"  rebuilt: {_clip(dumps(difference.rebuilt))}\n"
        )
    if not differences and not args.json:
        out.write(f"ok: {', '.join(selected)} match a fresh rebuild\n")
    return 1 if differences else 0


def _diff(d: Difference) -> dict[str, object]:
    return {"projection": d.projection, "key": d.key, "live": d.live, "rebuilt": d.rebuilt}


def _rebuild(config: Config, log: EventLog, selected: Factories, out: TextIO) -> int:
    head, _ = log.head()
    state = open_configured_state(config)
    try:
        for name, factory in selected.items():
            projection = factory()
            progress = Progress(f"rebuild {name}")
            scratch = rebuild(log, projection, head, progress.update)
            progress.close()
            snapshot = (
                scratch.snapshot(name) if isinstance(projection, SnapshottingProjection) else None
            )
            state.replace(name, projection.version, head, scratch.items(name), snapshot)
            out.write(f"rebuilt {name} up to position {head}\n")
    finally:
        state.close()
    return 0


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
