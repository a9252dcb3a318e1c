"""The schema: a fresh database and one upgraded step by step end up the same; the
server's own upgrade, in a child process, ends at the same head."""

from __future__ import annotations

import psycopg
import pytest

from homeserver.storage.core import migrate_apart, migrations
from tests.conftest import PostgresServer


def test_stepwise_upgrade_equals_fresh_install(postgres: PostgresServer) -> None:
    fresh = postgres.create_database()
    migrations.upgrade(fresh)

    stepwise = postgres.create_database()
    for revision in migrations.revisions():
        migrations.upgrade(stepwise, revision)
        assert migrations.current_revision(stepwise) == revision

    assert migrations.current_revision(fresh) == migrations.head_revision()
    assert migrations.schema_snapshot(stepwise) == migrations.schema_snapshot(fresh)
    assert migrations.schema_snapshot(fresh)["columns"], "the schema should not be empty"


def test_upgrade_is_idempotent(postgres: PostgresServer) -> None:
    conninfo = postgres.create_database()
    migrations.upgrade(conninfo)
    before = migrations.schema_snapshot(conninfo)
    migrations.upgrade(conninfo)
    assert migrations.schema_snapshot(conninfo) == before


def test_the_server_upgrades_in_a_child_and_reads_the_same_head(
    postgres: PostgresServer,
) -> None:
    """The serving process never loads alembic: its head, read from the scripts, is
    alembic's, and its upgrade (in a child process) ends at that head."""
    assert migrate_apart.head_revision() == migrations.head_revision()
    conninfo = postgres.create_database()
    assert migrate_apart.current_revision(conninfo) is None
    migrate_apart.upgrade(conninfo)
    assert migrate_apart.current_revision(conninfo) == migrations.head_revision()
    assert migrations.current_revision(conninfo) == migrations.head_revision()


def test_a_failed_upgrade_in_the_child_is_one_line(postgres: PostgresServer) -> None:
    conninfo = postgres.create_database()
    migrations.upgrade(conninfo, migrations.revisions()[0])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'nowhere'")
    with pytest.raises(migrate_apart.MigrationError) as failure:
        migrate_apart.upgrade(conninfo)
    message = str(failure.value)
    assert "nowhere" in message and "\n" not in message and "Traceback" not in message
