"""A PostgreSQL cluster that one test owns, so that it may stop and start it under a
running homeserver: the embedded one (the server's default, PostgreSQL from the wheel on
a Unix socket), or the Debian binaries on a free TCP port (an external database)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

from psycopg.conninfo import make_conninfo

from homeserver.storage.core.embedded_postgres import EmbeddedPostgres
from tests.integration.peers import free_port

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnCluster(Protocol):
    conninfo: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def destroy(self) -> None: ...


class EmbeddedCluster:
    """The embedded PostgreSQL, exactly as `homeserver run` starts it."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="hs-pg-own-"))
        self._embedded = EmbeddedPostgres(self._root / "postgres")
        self.conninfo = self._embedded.start()

    def start(self) -> None:
        self._embedded.start()

    def stop(self) -> None:
        self._embedded.stop()

    def destroy(self) -> None:
        self._embedded.stop()
        shutil.rmtree(self._root, ignore_errors=True)


class DebianCluster:
    """A throwaway cluster of the Debian packages' PostgreSQL on 127.0.0.1 and a free
    port, run as the `postgres` account when we are root (initdb refuses root)."""

    def __init__(self) -> None:
        self._account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._root = Path(tempfile.mkdtemp(prefix="hs-pg-own-"))
        if self._account is not None:
            os.chown(self._root, self._account.pw_uid, self._account.pw_gid)
        self._data = self._root / "data"
        self.port = free_port()
        self.conninfo = make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        self._pg(
            "initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-instructions",
        )  # fmt: skip
        self.start()

    def _pg(self, program: str, *args: str) -> None:
        account = self._account

        def drop_privileges() -> None:
            if account is not None:
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)

        result = subprocess.run(
            [str(DEBIAN_BIN / program), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            preexec_fn=drop_privileges,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{program}: {result.stderr or result.stdout}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
        self._pg(
            "pg_ctl", "-D", str(self._data), "-l", str(self._root / "log"), "-o", options,
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)


class DebianStandby:
    """A streaming replica of a DebianCluster, made with pg_basebackup on loopback."""

    def __init__(self, primary: DebianCluster) -> None:
        self._primary = primary
        self._data = primary._root / "standby"
        self.port = free_port()
        self.conninfo = make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        primary._pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self._data), "-R", "-X", "stream",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self._primary._root} -c listen_addresses=127.0.0.1"
        self._primary._pg(
            "pg_ctl", "-D", str(self._data), "-l", str(self._primary._root / "standby.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._primary._pg("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")


def debian_available() -> bool:
    return (DEBIAN_BIN / "initdb").exists()
