"""A real `homeserver run` process for end-to-end tests with real clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PostgresServer
from tests.integration.test_process import Server, clean_env, free_port, postgres_processes

START_BUDGET = 30.0


@pytest.fixture
def running_homeserver(tmp_path: Path, postgres: PostgresServer) -> Iterator[str]:
    """Base URL of a server with open registration and no rate limits, on a fresh
    database of the test PostgreSQL when one is configured (else the embedded one)."""
    data_dir = tmp_path / "data"
    env = clean_env()
    if os.environ.get("HOMESERVER_TEST_DATABASE_URL"):
        env["HOMESERVER_DATABASE_URL"] = postgres.create_database()
    port = free_port()
    server = Server(data_dir, port, "--open-registration", "--no-rate-limits", env=env)
    try:
        server.wait_ready(START_BUDGET)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert server.stop() == 0, server.log.read_text()
        for pid in postgres_processes(data_dir / "postgres"):
            os.kill(pid, 9)
