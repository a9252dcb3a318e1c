"""Media bytes on disk, named by their SHA-256 under the data directory's `media/`.

Content addressing stores a file uploaded twice once, and makes every write
idempotent: bytes are streamed into a temporary file (hashed and counted on the way,
never held whole in memory), flushed to disk, then renamed into place, so a reader
never sees a partial file and a crash leaves at most a stray temporary file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

READ_CHUNK = 256 * 1024
# An upload still being received is younger than this (uploads are bounded in size and
# a stalled client is cut off long before); older temporary files are left by crashes.
STALE_UPLOAD_S = 6 * 3600


class ContentTooLarge(Exception):
    """More bytes arrived than the writer's limit allows."""


class MediaFiles:
    """The media store of one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._content = root / "sha256"
        self._tmp = root / "tmp"

    def ensure_dirs(self) -> None:
        self._content.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Two levels of fan-out keep directories small on stores of millions of files."""
        return self._content / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def sweep_stale(self, now: float | None = None) -> int:
        """Delete temporary files left by a crash mid-upload; how many. Files of uploads
        in progress (in this or another worker process) are too young to go."""
        if not self._tmp.is_dir():
            return 0
        cutoff = (time.time() if now is None else now) - STALE_UPLOAD_S
        removed = 0
        for entry in self._tmp.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def writer(self, limit: int) -> FileWriter:
        """A new temporary file accepting at most `limit` bytes."""
        self.ensure_dirs()
        return FileWriter(self, self._tmp / f"upload-{secrets.token_hex(16)}", limit)

    async def write_bytes(self, data: bytes) -> tuple[str, int]:
        """Store a small in-memory blob (a thumbnail); (sha256, size)."""
        writer = self.writer(len(data))
        try:
            writer.write(data)
            return await writer.commit()
        finally:
            writer.discard()

    async def read_chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """The file's bytes in chunks, read off the event loop."""
        handle = await asyncio.to_thread(self.path_of(sha256).open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
                yield chunk
        finally:
            handle.close()


class FileWriter:
    """One file being received: `write` chunks, then `commit` (or `discard`)."""

    def __init__(self, store: MediaFiles, tmp_path: Path, limit: int) -> None:
        self._store = store
        self._tmp_path = tmp_path
        self._limit = limit
        self._hash = hashlib.sha256()
        self.size = 0
        self._file: BinaryIO | None = tmp_path.open("xb")

    def write(self, chunk: bytes) -> None:
        """Append bytes; raises ContentTooLarge once the limit is passed. Writes go to
        the page cache, so they do not stall the event loop; `commit` does the sync."""
        if self._file is None:
            raise RuntimeError("write after commit or discard")
        self.size += len(chunk)
        if self.size > self._limit:
            raise ContentTooLarge(f"over {self._limit} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    async def commit(self) -> tuple[str, int]:
        """Flush, sync and move the file to its content address; (sha256, size)."""
        digest = self._hash.hexdigest()
        await asyncio.to_thread(self._finish, digest)
        return digest, self.size

    def _finish(self, digest: str) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        final = self._store.path_of(digest)
        if final.is_file():
            # The same bytes are already stored: keep the stored copy.
            self._tmp_path.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp_path, final)

    def discard(self) -> None:
        """Drop the temporary file (a no-op after commit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp_path.unlink(missing_ok=True)
