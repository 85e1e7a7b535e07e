"""`lazy_attributes`: a package's names imported from their modules when first named.

A package whose public API includes a backend few processes use (the PostgreSQL log,
the OpenAI provider) names it lazily, so importing the package does not import the
backend's libraries: psycopg, openai's SDK with its thousands of types. Each package
keeps its lazy names in a `_LAZY` map (name -> module) and sets
`__getattr__ = lazy_attributes(__name__, _LAZY)` (PEP 562) under `if not TYPE_CHECKING:`;
type checkers see the names through `if TYPE_CHECKING:` imports, and no catch-all that
would let any misspelt name through.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, lazy: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: a name of `lazy` is imported from its module,
    kept in the package (the next lookup finds it directly) and returned."""

    def __getattr__(name: str) -> object:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
