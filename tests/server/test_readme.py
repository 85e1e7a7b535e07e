"""The README's examples work as written: the event-store example runs twice in a row
(it must not raise `WrongExpectedVersion` the second time), with the venv's Python."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60.0
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _event_store_example() -> str:
    blocks = PYTHON_BLOCK.findall((ROOT / "README.md").read_text())
    [example] = [block for block in blocks if "open_event_store" in block]
    return str(example)


def test_readme_event_store_example_runs_twice(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_event_store_example())
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    first, second = outputs
    assert first[0] == "appended at (1,) stream version now 1"
    assert second[0] == "appended at (2,) stream version now 2"
    assert [line.split()[:3] for line in second[1:]] == [
        ["1", "run-demo", "RunRequested"],
        ["2", "run-demo", "RunRequested"],
    ]


def test_readme_points_only_at_files_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    paths = [name for name in re.findall(r"`([\w./-]+\.(?:md|py|toml))`", readme) if "/" in name]
    assert paths
    assert [name for name in paths if not (ROOT / name).exists()] == []
    assert "DESIGN.md" not in readme
    assert ".venv/bin/python" in readme


def test_readme_two_node_config_is_a_valid_config(tmp_path: Path) -> None:
    from server.config import load_config

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    [example] = [block for block in blocks if "# node-a.toml" in block]
    path = tmp_path / "node-a.toml"
    path.write_text(example)
    config = load_config(path, env={})
    assert (config.store.backend, config.server.node_id) == ("postgres", "node-a")
    assert config.resume.lease_ttl_s == 15.0
