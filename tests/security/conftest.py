"""Fixtures of the hostile-client tests."""

from __future__ import annotations

import pytest

from tests.security.principal_server import TOKEN_ENV


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The principals' tokens in the environment, as `server.principals` reads them."""
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
