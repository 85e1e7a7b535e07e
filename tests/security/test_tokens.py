"""Tokens, tried as an attacker would: near-miss guesses are refused like any other,
every configured token is compared (in constant time) whichever one matches, and a token
short enough to guess is refused at start-up wherever it came from, with one line naming
that place and never the token."""

from __future__ import annotations

import hmac
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from server._access import MIN_TOKEN_CHARS, match_token
from server.app import server_tokens
from server.cli._main import main
from server.config import load_config
from server.errors import ConfigError, WeakToken
from server.ws import AgentServer
from tests.server.ws_helpers import TIMEOUT_S, Harness, serving

from .server_attacks import SECOND_TOKEN, TOKEN

SHORT = "x" * (MIN_TOKEN_CHARS - 1)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, tokens=(TOKEN, SECOND_TOKEN)) as harness:
        yield harness


@pytest.mark.parametrize(
    "guess",
    [
        pytest.param(TOKEN[:-1], id="prefix"),
        pytest.param(TOKEN + "x", id="extended"),
        pytest.param(TOKEN.upper(), id="other-case"),
        pytest.param(f" {TOKEN} ", id="padded"),
        pytest.param(TOKEN[:-1] + "\x00", id="nul-for-last-char"),
        pytest.param("", id="empty"),
        pytest.param(TOKEN + SECOND_TOKEN, id="two-tokens-joined"),
        pytest.param("é" * 40, id="non-ascii"),
    ],
)
async def test_near_miss_token_is_unauthorized_and_closed_with_1008(
    guarded: Harness, guess: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with guarded.client() as client:
            await client.send({"type": "hello", "id": "h", "token": guess})
            code = await client.closed_code()
    assert [(f["type"], f["code"]) for f in client.seen] == [("error", "unauthorized")]
    assert code == 1008


async def test_each_configured_token_is_welcomed(guarded: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        for token in (TOKEN, SECOND_TOKEN):
            async with guarded.client() as client:
                reply = await client.request({"type": "hello", "id": "h", "token": token})
                assert reply["type"] == "welcome"
                await client.ping()


@pytest.mark.parametrize("given", [TOKEN, SECOND_TOKEN, "guess"], ids=["first", "second", "none"])
def test_every_token_is_compared_in_constant_time_whichever_matches(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("server._access.hmac.compare_digest", counting)
    tokens = (TOKEN, SECOND_TOKEN, "third-token-abcdef0123456789abcdef012")
    found = match_token(tokens, given)
    assert found == (given if given in tokens else None)
    assert len(calls) == len(tokens)  # no early exit on a match
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


# --- too short to guard anything ------------------------------------------------------


def test_short_token_in_the_config_file_is_a_config_error_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\ntokens = ["{TOKEN}", "{SHORT}"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (info.value.source, info.value.key) == (str(path), "server.tokens")
    assert str(info.value) == (
        f"{path}: server.tokens: item 1: a token must be at least 32 characters, got 31"
    )
    assert SHORT not in str(info.value)


def test_short_token_in_the_environment_override_names_the_variable() -> None:
    env = {"AUTOAGENT_SERVER__TOKENS": '["s3cret"]'}
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert (info.value.source, info.value.key) == ("AUTOAGENT_SERVER__TOKENS", "server.tokens")
    assert "s3cret" not in str(info.value)


def test_token_of_exactly_the_minimum_length_is_accepted() -> None:
    token = "y" * MIN_TOKEN_CHARS
    config = load_config(env={"AUTOAGENT_SERVER__TOKENS": f'["{token}"]'})
    assert server_tokens(config, env={}) == (token,)


def test_short_autoagent_token_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        server_tokens(load_config(env={}), env={"AUTOAGENT_TOKEN": "env-s3cret"})
    assert str(info.value) == "AUTOAGENT_TOKEN: a token must be at least 32 characters, got 10"


def test_serve_with_a_short_autoagent_token_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOAGENT_TOKEN", "short")
    out = io.StringIO()
    argv = ["serve", "--port", "0", "--data-dir", str(tmp_path / "data")]
    assert main(argv, out=out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoagent: error: ")
    assert "AUTOAGENT_TOKEN" in err and "at least 32 characters" in err
    assert "short" not in err.removeprefix("autoagent: error: AUTOAGENT_TOKEN")
    assert "listening" not in out.getvalue()
    assert not (tmp_path / "data").exists()


async def test_server_handed_a_short_token_refuses_to_listen(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path) as harness:
            weak = AgentServer(
                harness.store, harness.orchestrator, harness.runner, harness.app.limits, (SHORT,)
            )
            with pytest.raises(WeakToken) as info:
                await weak.serve("127.0.0.1", 0)
    assert (info.value.length, info.value.minimum) == (31, 32)
    assert SHORT not in str(info.value)
