"""Bulk writes: one pre-compiled ``INSERT`` (or upsert) run over many rows through the driver.

Rows go to the driver as tuples: SQLAlchemy's per-row parameter processing cost more than the insert. On
SQLite, many rows go in each statement's ``VALUES``: the driver needs the GIL back after every statement it
steps, and waits for it behind the worker's extraction thread (bench: 40 us a row alone, 2.5 ms a row
beside a busy thread); 128 rows a statement make that wait 128 times rarer. Elsewhere, the driver's
``executemany`` pipelines one-row statements (PostgreSQL refuses an upsert touching a row twice in one
statement, which a multi-row ``VALUES`` could do).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

SQLITE_ROWS_PER_STATEMENT = 128

Statements = list[tuple[str, list[tuple[Any, ...]]]]
"""SQL text with its driver parameters, for ``exec_driver_sql``, in order."""


class BulkStatement:
    """``statement`` (an ``INSERT`` of one row of bind parameters) for any number of rows."""

    def __init__(self, statement: sa.Insert, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.columns: tuple[str, ...] = tuple(compiled.positiontup or ())
        """The order of the values in each row's tuple."""
        self.rows_per_statement = SQLITE_ROWS_PER_STATEMENT if dialect.name == "sqlite" else 1
        head, _, rest = self.sql.partition(" VALUES ")
        end = rest.index(")") + 1  # the one row's "(?, ?, …)": bind markers only, so its first ")" closes it
        self._head, self._one_row, self._tail = head, rest[:end], rest[end:]
        self._multi_row: dict[int, str] = {}

    def _sql_for(self, rows: int) -> str:
        sql = self._multi_row.get(rows)
        if sql is None:
            sql = self._multi_row[rows] = f"{self._head} VALUES {', '.join([self._one_row] * rows)}{self._tail}"
        return sql

    def statements(self, rows: Sequence[tuple[Any, ...]]) -> Statements:
        """The driver statements that write ``rows`` (tuples in :attr:`columns` order); pure CPU."""
        k = self.rows_per_statement
        if not rows:
            return []
        if k == 1:
            return [(self.sql, list(rows))]
        out: Statements = []
        full = len(rows) // k * k
        if full:
            out.append((self._sql_for(k), [tuple(chain.from_iterable(rows[i : i + k])) for i in range(0, full, k)]))
        if full < len(rows):
            out.append((self._sql_for(len(rows) - full), [tuple(chain.from_iterable(rows[full:]))]))
        return out

    async def execute(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write ``rows`` inside ``conn``'s transaction."""
        for sql, params in self.statements(rows):
            await conn.exec_driver_sql(sql, params)
