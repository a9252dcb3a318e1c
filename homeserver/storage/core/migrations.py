"""Applying the alembic migrations in `schema/` to a database.

Several worker processes may start at once on one database, so the upgrade runs
under a PostgreSQL advisory lock: the first applies the migrations, the others
wait and then find nothing to do. The server runs `upgrade` in a child process
(`migrate_apart.py`), `python -m homeserver.storage.core.migrations`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text

import schema
from homeserver.storage.core.migrate_apart import MigrationError

_MIGRATION_LOCK = 0x4D617472  # arbitrary, constant across versions


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(schema.__file__).parent))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(conninfo: str, revision: str = "head") -> None:
    """Bring the database at `conninfo` up to `revision`."""
    try:
        _upgrade(conninfo, revision)
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        lines = str(cause).strip().splitlines()
        raise MigrationError(lines[0] if lines else type(cause).__name__) from exc


def _upgrade(conninfo: str, revision: str) -> None:
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=pool.NullPool,
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            conn.commit()
            try:
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def current_revision(conninfo: str) -> str | None:
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=pool.NullPool,
    )
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def schema_snapshot(conninfo: str) -> dict[str, list[tuple[str, ...]]]:
    """The schema as comparable data: columns, indexes, constraints and sequences."""
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
            FROM information_schema.columns WHERE table_schema = 'public'
            ORDER BY table_name, column_name""",
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = 'public' ORDER BY tablename, indexname""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            ORDER BY 1, 2""",
        "sequences": """
            SELECT sequence_name, data_type FROM information_schema.sequences
            WHERE sequence_schema = 'public' ORDER BY 1""",
    }
    with psycopg.connect(conninfo) as conn:
        return {
            name: [tuple(str(v) for v in row) for row in conn.execute(sql).fetchall()]
            for name, sql in queries.items()
        }


def main() -> None:
    """Upgrade to head the database whose conninfo is on stdin; a failure's message
    is the last line on stderr, and the exit status 1."""
    try:
        upgrade(sys.stdin.read())
    except MigrationError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
