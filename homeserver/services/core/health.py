"""Readiness for a load balancer, and the drain that precedes a clean stop.

A process is ready when its database answers and it is not draining. On SIGTERM the
process drains: `/health` answers 503 so the load balancer stops routing to it, and
long-polling syncs are answered at once (empty) so that their clients reconnect,
through the load balancer, to another process.
"""

from __future__ import annotations

import asyncio
import logging

from homeserver.services.core.notifier import Notifier
from homeserver.storage.core.pool import Database

log = logging.getLogger(__name__)

# A load balancer checks every few seconds; a database slower than this counts as down.
PING_TIMEOUT_S = 2.0


class Health:
    def __init__(self, db: Database, notifier: Notifier) -> None:
        self.db = db
        self.notifier = notifier
        self.draining = False

    async def problem(self) -> str | None:
        """None when ready to serve, else why not (one short line)."""
        if self.draining:
            return "draining"
        try:
            await asyncio.wait_for(self.db.ping(), PING_TIMEOUT_S)
        except Exception as exc:  # any failure to answer means not ready
            log.debug("health: database check failed: %s", exc)
            return "database unavailable"
        return None

    def drain(self) -> None:
        """Stop being ready, and hand long-polls back to their clients."""
        self.draining = True
        self.notifier.drain()
