"""An in-process cache of query results, keyed by project and normalised query.

Each entry remembers the project's ``data_version`` it was computed at. Every transaction that changes a
project's spans raises that version before it commits, and a client hears "accepted" only after the
commit, so a cached result is never served once a write is acknowledged — whichever process wrote it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage.projects import data_version

T = TypeVar("T")


class QueryCache:
    def __init__(self, engine: AsyncEngine, max_entries: int = 512) -> None:
        self.engine = engine
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, Hashable], tuple[int, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def get(self, project_id: str, query: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The result of ``compute`` for ``query`` on ``project_id``, from the cache while the project's
        data has not changed. Callers must not modify what they get."""
        if not self.max_entries:
            return await compute()
        version = await data_version(self.engine, project_id)
        key = (project_id, query)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        # The version was read before computing: if data changes meanwhile, the next read recomputes.
        value = await compute()
        self._entries[key] = (version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
