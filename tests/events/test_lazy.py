"""`lazy_attributes`: a package's names imported when first named (PEP 562)."""

from __future__ import annotations

import sys
import types

import pytest

from events import lazy_attributes


def test_a_lazy_name_is_imported_once_and_kept_and_an_unknown_one_is_refused() -> None:
    package = types.ModuleType("lazy_probe_package")
    sys.modules[package.__name__] = package
    try:
        getter = lazy_attributes(package.__name__, {"JSONDecoder": "json"})
        package.__getattr__ = getter  # type: ignore[attr-defined]
        import json

        assert package.JSONDecoder is json.JSONDecoder  # type: ignore[attr-defined]
        assert vars(package)["JSONDecoder"] is json.JSONDecoder  # kept: no second lookup
        with pytest.raises(AttributeError, match="'lazy_probe_package' has no attribute 'x'"):
            getter("x")
        with pytest.raises(AttributeError):
            _ = package.other  # type: ignore[attr-defined]
    finally:
        del sys.modules[package.__name__]
