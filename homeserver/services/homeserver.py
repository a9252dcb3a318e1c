"""The running homeserver: configuration, database, signing key and services,
handed to every API handler through the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from federation.keys import SigningKey
from homeserver.config import Config
from homeserver.storage.pool import Database


@dataclass
class Homeserver:
    config: Config
    db: Database
    signing_key: SigningKey

    @property
    def server_name(self) -> str:
        return self.config.server_name
