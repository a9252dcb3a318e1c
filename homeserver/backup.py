"""`homeserver backup DIR` and `homeserver restore DIR`: everything a server is, in one
directory (the database dump, the signing key, the media store, a manifest).

A backup is safe while the server runs: the dump is one snapshot, and the media files
(content-addressed, never changed once written) are copied after it, so every file the
dumped database names is there. A restore needs the server stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from homeserver.config import Config, ConfigError
from homeserver.config.federation import RETIRED_KEYS_NAME, retired_keys_path
from homeserver.storage.core import dumps

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "database.dump"
SIGNING_KEY = "signing.key"
MEDIA = "media"


def backup(config: Config, conninfo: str, target: Path) -> dict[str, Any]:
    """Write a backup into `target` (new or empty); its manifest."""
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"backup directory {target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    try:
        dumps.dump(conninfo, target / DATABASE)
    except dumps.DumpError as exc:
        raise ConfigError(str(exc)) from None
    if config.signing_key_file.exists():
        shutil.copy2(config.signing_key_file, target / SIGNING_KEY)
    # Keys retired by `rotate-key` still verify what they signed: they travel too.
    if retired_keys_path(config.data_dir).exists():
        shutil.copy2(retired_keys_path(config.data_dir), target / RETIRED_KEYS_NAME)
    if config.media_dir.exists():
        shutil.copytree(config.media_dir, target / MEDIA)
    manifest = {
        "format": FORMAT,
        "server_name": config.server_name,
        "created_ts": int(time.time() * 1000),
        "files": sorted(p.name for p in target.iterdir()),
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source} is not a homeserver backup: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{source}: unknown backup format {manifest.get('format')!r}")
    return manifest


def restore(config: Config, conninfo: str, source: Path) -> dict[str, Any]:
    """Put the backup in `source` back: the database, the signing key, the media store."""
    manifest = read_manifest(source)
    if manifest.get("server_name") != config.server_name:
        raise ConfigError(
            f"the backup is of {manifest.get('server_name')!r}, this server is"
            f" {config.server_name!r} (set server_name to restore it)"
        )
    try:
        dumps.restore(conninfo, source / DATABASE)
    except dumps.DumpError as exc:
        raise ConfigError(str(exc)) from None
    if (source / SIGNING_KEY).exists():
        config.signing_key_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / SIGNING_KEY, config.signing_key_file)
    if (source / RETIRED_KEYS_NAME).exists():
        shutil.copy2(source / RETIRED_KEYS_NAME, retired_keys_path(config.data_dir))
    if (source / MEDIA).exists():
        if config.media_dir.exists():
            shutil.rmtree(config.media_dir)
        shutil.copytree(source / MEDIA, config.media_dir)
    return manifest
