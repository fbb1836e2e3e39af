"""The upsert-capable ``INSERT`` of each database the node runs on (SQLite, PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def upsert_insert(table: Table, dialect: str) -> sqlite.Insert | postgresql.Insert:
    """An ``INSERT`` into ``table`` that takes ``ON CONFLICT`` clauses, for ``dialect``.

    Raises
    ------
    ValueError
        If the node does not run on that database.
    """
    if dialect not in _DIALECT_INSERTS:
        raise ValueError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    return _DIALECT_INSERTS[dialect](table)
