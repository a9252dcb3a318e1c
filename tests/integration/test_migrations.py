"""The schema: a fresh database and one upgraded step by step end up the same."""

from __future__ import annotations

from homeserver.storage.core import migrations
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
