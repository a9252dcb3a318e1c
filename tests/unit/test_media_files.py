"""Temporary upload files: a crash leaves them behind, a restart sweeps them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from homeserver.storage.media.files import STALE_UPLOAD_S, MediaFiles


async def test_stale_temporary_files_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "media")
    stored, _ = await files.write_bytes(b"kept content")
    abandoned = files.writer(100)
    abandoned.write(b"half an upload")
    in_progress = files.writer(100)
    in_progress.write(b"still arriving")
    old = time.time() - STALE_UPLOAD_S - 60
    os.utime(abandoned._tmp_path, (old, old))

    assert files.sweep_stale() == 1
    assert not abandoned._tmp_path.exists()
    assert in_progress._tmp_path.exists()
    assert files.exists(stored)
    assert (await in_progress.commit())[1] == len(b"still arriving")


def test_sweeping_an_empty_store_is_harmless(tmp_path: Path) -> None:
    assert MediaFiles(tmp_path / "nothing yet").sweep_stale() == 0
