"""Shared test fixtures: a real PostgreSQL for the whole run, and fresh databases from it.

With HOMESERVER_TEST_DATABASE_URL set (CI points it at the machine's PostgreSQL)
tests create their databases there; otherwise they start the embedded PostgreSQL
in a temporary directory, exactly as `homeserver run` does.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from homeserver.storage.core import migrations
from homeserver.storage.core.embedded_postgres import EmbeddedPostgres


class PostgresServer:
    """Creates throwaway databases on one PostgreSQL server."""

    def __init__(self, admin_conninfo: str) -> None:
        self.admin_conninfo = admin_conninfo
        self._created: list[str] = []
        self._template: str | None = None

    def conninfo_for(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_conninfo)
        params["dbname"] = dbname
        return make_conninfo(**params)  # type: ignore[arg-type]

    def create_database(self, template: str = "template0") -> str:
        name = f"hs_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\'')
        self._created.append(name)
        return self.conninfo_for(name)

    def migrated_database(self) -> str:
        """A new database with the current schema, copied from a template migrated once."""
        if self._template is None:
            conninfo = self.create_database()
            migrations.upgrade(conninfo)
            self._template = str(conninfo_to_dict(conninfo)["dbname"])
        return self.create_database(template=self._template)

    def drop(self, conninfos: list[str]) -> None:
        names = [str(conninfo_to_dict(conninfo)["dbname"]) for conninfo in conninfos]
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                self._created.remove(name)

    def drop_all(self) -> None:
        self.drop([self.conninfo_for(name) for name in reversed(self._created)])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    url = os.environ.get("HOMESERVER_TEST_DATABASE_URL")
    if url:
        server = PostgresServer(url)
        yield server
        server.drop_all()
        return
    with tempfile.TemporaryDirectory(prefix="hs-test-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "postgres")
        conninfo = embedded.start()
        params = conninfo_to_dict(conninfo)
        params["dbname"] = "postgres"
        server = PostgresServer(make_conninfo(**params))  # type: ignore[arg-type]
        try:
            yield server
        finally:
            embedded.stop()


@pytest.fixture
def database_factory(postgres: PostgresServer) -> Iterator[Callable[[], str]]:
    """Fresh migrated databases, dropped when the test ends: dropping them all at the
    end of the run instead takes minutes, past the per-test timeout of the last test."""
    made: list[str] = []

    def make() -> str:
        made.append(postgres.migrated_database())
        return made[-1]

    yield make
    postgres.drop(made)
