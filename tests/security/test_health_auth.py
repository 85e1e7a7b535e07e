"""/healthz and /metrics, tried as an outsider would: with tokens configured they answer
401 (and a Bearer challenge, and nothing about the server) unless the request carries
`Authorization: Bearer <a configured token>`, or `server.metrics_public` is on; without
tokens (loopback only) they stay open. Plus the `[server]` keys of this hardening."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from server.app import server_limits
from server.config import load_config
from server.errors import ConfigError
from tests.server.ws_helpers import TIMEOUT_S, serving

from .server_attacks import SECOND_TOKEN, TOKEN, http_get

PATHS = ["/healthz", "/metrics"]

REFUSED_HEADERS = [
    pytest.param([], id="no-authorization"),
    pytest.param([("Authorization", f"Bearer {TOKEN[:-1]}")], id="prefix-of-a-token"),
    pytest.param([("Authorization", f"Bearer {TOKEN}x")], id="token-plus-one"),
    pytest.param([("Authorization", "Bearer")], id="bearer-without-token"),
    pytest.param([("Authorization", TOKEN)], id="token-without-scheme"),
    pytest.param([("Authorization", f"Basic {TOKEN}")], id="basic-scheme"),
    pytest.param([("Authorization", f"Token {TOKEN}")], id="other-scheme"),
    pytest.param([("X-Token", TOKEN)], id="other-header"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("headers", REFUSED_HEADERS)
async def test_health_and_metrics_without_a_valid_bearer_token_get_401(
    tmp_path: Path, path: str, headers: list[tuple[str, str]]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, tokens=(TOKEN, SECOND_TOKEN)) as app:
            status, found, body = await http_get(app.port, path, headers)
    assert status == 401
    assert found["www-authenticate"].startswith("Bearer")
    assert b"autoagent_" not in body and b"head_position" not in body


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("token", [TOKEN, SECOND_TOKEN], ids=["first", "second"])
async def test_health_and_metrics_with_a_configured_bearer_token_are_served(
    tmp_path: Path, path: str, token: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, tokens=(TOKEN, SECOND_TOKEN)) as app:
            status, _, body = await http_get(app.port, path, [("Authorization", f"bearer {token}")])
    assert status == 200
    assert (b"head_position" if path == "/healthz" else b"autoagent_") in body


@pytest.mark.parametrize("path", PATHS)
async def test_metrics_public_serves_them_without_a_token(tmp_path: Path, path: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, tokens=(TOKEN,), metrics_public=True) as app:
            status, _, _ = await http_get(app.port, path)
    assert status == 200


@pytest.mark.parametrize("path", PATHS)
async def test_without_tokens_they_need_no_authorization(tmp_path: Path, path: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path) as app:
            status, _, _ = await http_get(app.port, path)
    assert status == 200


# --- the [server] keys ----------------------------------------------------------------


def test_hardening_keys_default_to_safe_values() -> None:
    server = load_config(env={}).server
    assert server.allowed_origins == ()
    assert server.metrics_public is False
    assert (server.hello_timeout_s, server.idle_timeout_s) == (10.0, 300.0)


def test_hardening_keys_are_read_and_reach_the_server_limits(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[server]\n"
        'allowed_origins = ["https://console.example", "http://localhost:3000"]\n'
        "metrics_public = true\nhello_timeout_s = 2.5\nidle_timeout_s = 60\n"
    )
    config = load_config(path, env={})
    assert config.server.allowed_origins == ("https://console.example", "http://localhost:3000")
    assert config.server.metrics_public is True
    limits = server_limits(config)
    assert (limits.hello_timeout_s, limits.idle_timeout_s) == (2.5, 60.0)


@pytest.mark.parametrize(
    ("variable", "raw", "problem"),
    [
        (
            "AUTOAGENT_SERVER__ALLOWED_ORIGINS",
            '["null"]',
            "item 0: expected an origin like 'https://console.example' or 'http://host:8080'",
        ),
        (
            "AUTOAGENT_SERVER__ALLOWED_ORIGINS",
            '["https://ok.example", "https://console.example/app"]',
            "item 1: expected an origin like 'https://console.example' or 'http://host:8080'",
        ),
        (
            "AUTOAGENT_SERVER__ALLOWED_ORIGINS",
            '["console.example"]',
            "item 0: expected an origin like 'https://console.example' or 'http://host:8080'",
        ),
        (
            "AUTOAGENT_SERVER__ALLOWED_ORIGINS",
            "https://console.example",
            "expected an array of strings, got a string",
        ),
        (
            "AUTOAGENT_SERVER__METRICS_PUBLIC",
            "1",
            "expected a boolean (true or false), got an integer",
        ),
        ("AUTOAGENT_SERVER__HELLO_TIMEOUT_S", "0", "must be greater than 0, got 0.0"),
        ("AUTOAGENT_SERVER__IDLE_TIMEOUT_S", "-5", "must be greater than 0, got -5.0"),
        (
            "AUTOAGENT_SERVER__IDLE_TIMEOUT_SS",
            "5",
            "unknown key 'idle_timeout_ss'; did you mean 'idle_timeout_s'?",
        ),
    ],
    ids=[
        "origin-null",
        "origin-with-path",
        "origin-without-scheme",
        "origins-not-a-list",
        "metrics-public-not-bool",
        "hello-timeout-zero",
        "idle-timeout-negative",
        "misspelt-key",
    ],
)
def test_invalid_hardening_keys_are_config_errors_naming_the_key(
    variable: str, raw: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={variable: raw})
    key = "server." + variable.removeprefix("AUTOAGENT_SERVER__").lower()
    assert (info.value.source, info.value.key) == (variable, key)
    assert info.value.problem == problem
    assert "\n" not in str(info.value)
