"""Total validation of configuration: any config file and any AUTOAGENT_* value ends as a
`Config` whose fields have their declared types, or as one `ConfigError` line naming
the source, never a `RecursionError` or `TypeError` from inside the loader.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import Config, config_as_dict, load_config
from server.errors import ConfigError

KEYS = {section: list(keys) for section, keys in config_as_dict(Config()).items()}
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
toml_values = (
    st.sampled_from(
        ["true", "8", "-1", "0", "1e400", "nan", "inf", "-inf", '"x"', '""', "[]", '["a", 1]']
    )
    | st.sampled_from(["{a = 1}", "[[1], [2]]", "2024-01-01", "0x10", '"""a\nb"""', "1_000"])
    | st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 100_000).map(lambda n: "{a=" * n)
    | any_text
)
variables = st.builds(
    lambda section, key: f"AUTOAGENT_{section.upper()}__{key.upper()}",
    st.sampled_from(sorted(KEYS)) | st.text(max_size=5),
    st.sampled_from(sorted({k for keys in KEYS.values() for k in keys})) | st.text(max_size=5),
)


def check(config: Config) -> None:
    """Every field holds a value of its declared kind (bools are no ints, floats finite)."""
    for section in dataclasses.fields(config):
        for spec in dataclasses.fields(getattr(config, section.name)):
            value = getattr(getattr(config, section.name), spec.name)
            assert value is not None, spec.name
            if isinstance(value, float):
                assert math.isfinite(value), spec.name
            if isinstance(value, tuple):
                assert all(isinstance(item, str | int | float) for item in value), spec.name


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(variables, toml_values, max_size=4))
def test_any_environment_gives_a_config_or_one_config_error(env: dict[str, str]) -> None:
    try:
        config = load_config(env=env)
    except ConfigError as exc:
        assert exc.source in env and "\n" not in str(exc)
        return
    check(config)


def file_texts() -> st.SearchStrategy[str]:
    line = st.builds(
        lambda section, key, value: f"[{section}]\n{key} = {value}\n",
        st.sampled_from(sorted(KEYS)) | st.text(max_size=4),
        st.sampled_from(["port", "host", "tokens", "sync", "timeout_s", "enabled"]),
        toml_values,
    )
    return st.lists(line, max_size=3).map("".join) | any_text | toml_values


@settings(max_examples=200, deadline=None)
@given(file_texts())
def test_any_config_file_gives_a_config_or_one_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            config = load_config(path, env={})
        except ConfigError as exc:
            assert exc.source == str(path) and "\n" not in str(exc)
            return
    check(config)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("inf", "expected a finite number, got inf"),
        ("nan", "expected a finite number, got nan"),
        ("[" * 5000 + "]" * 5000, "expected a number, got a string"),
    ],
    ids=["infinity", "nan", "nested-past-the-recursion-limit"],
)
def test_env_values_that_used_to_slip_through_are_named(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"AUTOAGENT_LLM__TIMEOUT_S": value})
    assert caught.value.key == "llm.timeout_s"
    assert caught.value.problem == problem
