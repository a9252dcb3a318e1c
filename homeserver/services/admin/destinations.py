"""Federation destinations in Synapse's admin shapes: each server we send to, since when
it fails, when we last tried, how long until the next try; resetting one retries at once."""

from __future__ import annotations

from typing import Any

from homeserver.services.core.errors import invalid_param, not_found
from homeserver.services.remote.sender import FederationSender
from homeserver.storage.admin import destinations
from homeserver.storage.core.pool import Database

ORDER_BY = frozenset(destinations.ORDER_COLUMNS)
MAX_PAGE = 1000


def render(row: destinations.DestinationRow) -> dict[str, Any]:
    failing = row.failure_count > 0
    return {
        "destination": row.destination,
        "retry_last_ts": (row.retry_at_ts or 0) - row.retry_interval_ms if failing else 0,
        "retry_interval": row.retry_interval_ms if failing else 0,
        "failure_ts": row.failure_ts,
        "last_successful_stream_ordering": None,
    }


class AdminDestinationService:
    def __init__(self, db: Database, server_name: str, sender: FederationSender) -> None:
        self.db = db
        self.server_name = server_name
        self.sender = sender

    async def list(
        self, name: str | None, *, order_by: str, ascending: bool, offset: int, limit: int
    ) -> dict[str, Any]:
        limit = min(limit, MAX_PAGE)
        async with self.db.pool.connection() as conn:
            rows, total = await destinations.list_destinations(
                conn, name, order_by=order_by, ascending=ascending, offset=offset, limit=limit
            )
        out: dict[str, Any] = {"destinations": [render(row) for row in rows], "total": total}
        if offset + len(rows) < total:
            out["next_token"] = str(offset + len(rows))
        return out

    async def get(self, destination: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            row = await destinations.get_destination(conn, destination)
        if row is None:
            raise not_found("Unknown destination")
        return render(row)

    async def rooms(
        self, destination: str, *, ascending: bool, offset: int, limit: int
    ) -> dict[str, Any]:
        await self.get(destination)
        async with self.db.pool.connection() as conn:
            rows, total = await destinations.rooms_of_destination(
                conn, destination, ascending=ascending, offset=offset, limit=min(limit, MAX_PAGE)
            )
        out: dict[str, Any] = {
            "rooms": [{"room_id": room_id, "stream_ordering": pos} for room_id, pos in rows],
            "total": total,
        }
        if offset + len(rows) < total:
            out["next_token"] = str(offset + len(rows))
        return out

    async def reset_connection(self, destination: str) -> None:
        """Forget the backoff and send what is queued now."""
        if destination == self.server_name:
            raise invalid_param("Cannot reset connection to our own server")
        await self.get(destination)
        async with self.db.pool.connection() as conn:
            await destinations.reset(conn, destination)
        self.sender.on_contact(destination)
