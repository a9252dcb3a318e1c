"""The cluster fixture: nginx and three processes on one fresh database, shared by the
tests of a module (starting them is the slow part)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster
from tests.conftest import PostgresServer

SIZE = 3
# Messages and registrations are not what these tests limit; room creation keeps its
# default (a burst of 5), for the test of limits shared across processes.
SETTINGS = {
    "rate_limits": {
        "message": {"per_second": 1000.0, "burst": 1000},
        "registration": {"per_second": 1000.0, "burst": 1000},
        "join": {"per_second": 1000.0, "burst": 1000},
        "invite": {"per_second": 1000.0, "burst": 1000},
    },
    "push": {"ip_range_whitelist": ["127.0.0.1/32"]},
}


@pytest.fixture(scope="module")
def cluster(postgres: PostgresServer) -> Iterator[Cluster]:
    # Outside pytest's temporary folder: nginx's workers and PostgreSQL run as other
    # accounts (see tests/integration/test_process.py's data_dir).
    with tempfile.TemporaryDirectory(prefix="hs-cluster-") as tmp:
        running = Cluster(Path(tmp), postgres.create_database(), SIZE, **SETTINGS)
        try:
            yield running
        finally:
            logs = running.logs()
            codes = running.stop()
            assert codes == [0] * len(codes), logs
            assert "Traceback" not in logs, logs
