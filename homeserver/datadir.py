"""The data directory: config, signing key, media store and embedded PostgreSQL.

One homeserver process owns a data directory at a time (an exclusive lock on a
file inside it), so a second `homeserver run` fails cleanly instead of starting a
second postmaster on the same cluster.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

import yaml

from federation.keys import (
    SigningKey,
    encode_verify_key,
    generate_signing_key,
    read_signing_keys,
    write_signing_keys,
)
from homeserver.config import ConfigError, generated_config_text
from homeserver.config.federation import read_retired_keys, retired_keys_path

CONFIG_NAME = "homeserver.yaml"
LOCK_NAME = "homeserver.lock"


class DataDirBusy(ConfigError):
    """Another homeserver process is using this data directory."""


def ensure_layout(data_dir: Path, server_name: str) -> Path:
    """Create the data directory on first use; return the config file's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "media").mkdir(exist_ok=True)
    config_path = data_dir / CONFIG_NAME
    if not config_path.exists():
        config_path.write_text(generated_config_text(server_name), encoding="utf-8")
    return config_path


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The server's signing key, created on first use. Processes of one server starting
    together on a shared key file agree on one key: it is written under another name,
    then linked into place, which fails if another process got there first."""
    if not path.exists():
        key = generate_signing_key()
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(write_signing_keys([key]))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    try:
        keys = read_signing_keys(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not a signing key file ({exc})") from None
    if not keys:
        raise ConfigError(f"{path}: the signing key file is empty")
    return keys[0]


def _write_atomically(path: Path, text: str) -> None:
    """Replace a file's content whole (a crash leaves the old or the new, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rotate_signing_key(data_dir: Path, key_path: Path, now_ms: int) -> tuple[str, str]:
    """Retire the signing key for a new one: the old key's public half is recorded,
    expired now, in the data directory's retired keys (published in `old_verify_keys`
    so what it signed still verifies), then the new key replaces it in the key file.
    Returns (old key id, new key id)."""
    old = load_or_create_signing_key(key_path)
    retired = read_retired_keys(data_dir)
    new = generate_signing_key()
    while new.key_id == old.key_id or new.key_id in retired:
        new = generate_signing_key()
    retired[old.key_id] = {"key": encode_verify_key(old.verify_key), "expired_ts": now_ms}
    # The retired key first: should the second write not happen, the old key still
    # signs, and the server publishes it as current (a current key wins over a
    # retired one of the same id).
    _write_atomically(retired_keys_path(data_dir), yaml.safe_dump(retired, sort_keys=True))
    _write_atomically(key_path, write_signing_keys([new]))
    return old.key_id, new.key_id


class DataDirLock:
    """Held for the life of the process that runs the server on this data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            who = f" (pid {holder})" if holder else ""
            raise DataDirBusy(
                f"another homeserver is already running on {self.path.parent}{who}"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def is_held_elsewhere(self) -> bool:
        """True when a running homeserver owns the data directory."""
        try:
            with open(self.path, "a+", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
