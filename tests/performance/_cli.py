"""The command line every benchmark shares: its flags, the head of its JSON, its report.

A benchmark's `main` builds its flags with `make_parser`, works in a `scratch_dir`,
starts its result with `result_header`, and ends with `finish` (end of run stamped in
the usual keys) or `publish` (a benchmark that stamps its own).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._common import Table, load_average, machine_info, write_json

Report = Callable[[dict[str, Any]], Sequence[Table]]


def make_parser(
    doc: str | None,
    default_out: Path,
    *,
    out_flag: str = "--out",
    quick_help: str = "small sizes, for a smoke run",
    work_dir_help: str | None = None,
) -> argparse.ArgumentParser:
    """`--quick`, `--out` (spelt `out_flag`, read as `args.out`), `--markdown`, and
    `--work-dir` when it has a help text; described by the first line of `doc`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        out_flag,
        dest="out",
        metavar="PATH",
        type=Path,
        default=default_out,
        help="JSON results file",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    if work_dir_help is not None:
        temp = Path(tempfile.gettempdir())
        parser.add_argument("--work-dir", type=Path, default=temp, help=work_dir_help)
    return parser


def result_header(
    module: str, quick: bool, argv: Sequence[str] | None, machine_dir: Path
) -> dict[str, Any]:
    """The first keys of a result: benchmark, quick, the command to run it again, machine."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": module.removeprefix("bench_"),
        "quick": quick,
        "command": " ".join([f".venv/bin/python -m tests.performance.{module}", *args]),
        "machine": machine_info(machine_dir),
    }


@contextmanager
def scratch_dir(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh directory under `parent` (made if missing; None: the system temp dir),
    removed with everything in it afterwards."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent, ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


def finish(
    result: dict[str, Any],
    out: Path,
    report: Report,
    *,
    seconds: float,
    markdown: bool,
    epilogue: str = "",
    nan_as_null: bool = False,
) -> None:
    """Stamp the end of the run (`total_seconds`, `machine.loadavg_end`) and `publish`;
    `epilogue` is printed between the tables and the closing line."""
    result["total_seconds"] = round(seconds, 1)
    result["machine"]["loadavg_end"] = load_average()
    footer = f"{epilogue}\n{seconds:.1f} s in all; JSON written to {out}"
    publish(result, out, report, markdown=markdown, footer=footer, nan_as_null=nan_as_null)


def publish(
    result: dict[str, Any],
    out: Path,
    report: Report,
    *,
    markdown: bool,
    footer: str,
    nan_as_null: bool = False,
) -> None:
    """Write `result` to `out` as JSON, print `report(result)` as text (and as Markdown
    too with `markdown`), then `footer`."""
    write_json(out, result, nan_as_null=nan_as_null)
    tables = report(result)
    for table in tables:
        print(table.text())
    if markdown:
        print("\n\n".join(table.markdown() for table in tables))
    print(footer)
