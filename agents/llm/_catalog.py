"""The catalog of a set of tools, and the catalog cache keyed by its content hash.

The catalog derived from a set of specs (the JSON the prompts embed, in both forms, and
the lookup by name) is cached under a hash of the specs' canonical JSON, so a changed
tool yields a new hash and a cache miss, never a stale catalog.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.llm._tool_form import compact_dict
from agents.llm._tool_spec import ToolSpec


def catalog_hash(specs: Iterable[ToolSpec]) -> str:
    """Hash of the tools' canonical JSON, independent of the order they come in."""
    canonical = sorted(json.dumps(s.to_dict(), sort_keys=True) for s in specs)
    return hashlib.blake2b("\n".join(canonical).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolCatalog:
    """An immutable set of tools with its content hash and the views prompts need:
    `prompt_json` (each tool's JSON schema) and `compact_json` (the compact form,
    `agents.llm._tool_form`)."""

    specs: tuple[ToolSpec, ...]
    hash: str
    by_name: Mapping[str, ToolSpec]
    prompt_json: tuple[dict[str, Any], ...]
    compact_json: tuple[dict[str, Any], ...]

    @classmethod
    def build(cls, specs: Iterable[ToolSpec]) -> ToolCatalog:
        ordered = tuple(sorted(specs, key=lambda s: s.name))
        return cls(
            specs=ordered,
            hash=catalog_hash(ordered),
            by_name={s.name: s for s in ordered},
            prompt_json=tuple(s.prompt_dict() for s in ordered),
            compact_json=tuple(compact_dict(s) for s in ordered),
        )

    def get(self, name: str) -> ToolSpec | None:
        return self.by_name.get(name)

    def subset(self, names: Iterable[str]) -> ToolCatalog:
        """The catalog of the tools named (unknown names ignored), from this catalog's
        views: nothing is rebuilt or hashed again. Its hash is this one's and the names."""
        keep = set(names)
        picked = [i for i, spec in enumerate(self.specs) if spec.name in keep]
        specs = tuple(self.specs[i] for i in picked)
        return ToolCatalog(
            specs=specs,
            hash=self.hash + ":" + ",".join(s.name for s in specs),
            by_name={s.name: s for s in specs},
            prompt_json=tuple(self.prompt_json[i] for i in picked),
            compact_json=tuple(self.compact_json[i] for i in picked),
        )


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    hits: int
    misses: int
    size: int
    maxsize: int


class ToolCatalogCache:
    """LRU of built catalogs keyed by content hash: a changed tool is a cache miss."""

    def __init__(self, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._maxsize = maxsize
        self._entries: collections.OrderedDict[str, ToolCatalog] = collections.OrderedDict()
        self._hits = self._misses = 0

    def get(self, specs: Iterable[ToolSpec]) -> ToolCatalog:
        """The catalog of `specs`, built only when no catalog of the same content is cached."""
        specs = tuple(specs)
        key = catalog_hash(specs)
        cached = self._entries.get(key)
        if cached is not None:
            self._hits += 1
            self._entries.move_to_end(key)
            return cached
        self._misses += 1
        catalog = self._entries[key] = ToolCatalog.build(specs)
        if len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)
        return catalog

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(self._hits, self._misses, len(self._entries), self._maxsize)
