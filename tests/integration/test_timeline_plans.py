"""History reads stay index scans when the planner's statistics are stale.

A room that grew since the last ANALYZE (or a database with autovacuum off, like
the one these tests run on) once got a plan that read and sorted every event of the
room for each page of /messages, and one that intersected the few relations of a
page with a bitmap of the whole room. These tests run the storage queries on a room
of a few hundred events that no ANALYZE has seen, and check the plans PostgreSQL
picks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from psycopg import AsyncConnection

from homeserver.api.context import HOMESERVER
from homeserver.storage.timeline import relations, timeline
from tests.integration.conftest import RoomUser

MESSAGES = 1500


class Recorder:
    """A connection that runs queries as usual and keeps those it ran."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.queries: list[tuple[Any, Any]] = []

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.queries.append((query, params))
        return await self.conn.execute(query, params, **kwargs)

    def pipeline(self) -> Any:
        return self.conn.pipeline()


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def explain(conn: AsyncConnection, query: str, params: Any) -> list[dict[str, Any]]:
    cur = await conn.execute(b"EXPLAIN (FORMAT JSON) " + query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else orjson.loads(row[0])
    return plan_nodes(document[0]["Plan"])


async def fill(client: TestClient[Any, Any]) -> str:
    """A public room where two users said MESSAGES things, 20 at a time."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    for start in range(0, MESSAGES, 20):
        await asyncio.gather(
            *(
                (alice if i % 2 else bob).say(room_id, f"message {i}")
                for i in range(start, start + 20)
            )
        )
    return room_id


async def test_history_reads_of_a_busy_room_are_index_probes(
    homeserver_client: Callable[..., Any],
) -> None:
    client: TestClient[Any, Any] = await homeserver_client(**{"rate_limits.enabled": False})
    room_id = await fill(client)
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        latest = await timeline.latest_position(conn, room_id)
        recorder = Recorder(conn)
        # A page of /messages, with the reader's transaction ids: one scan of the
        # timeline index, in order, no sort; a probe by event for each transaction id.
        for forward, upper in ((False, latest), (True, None)):
            page, txn_ids = await timeline.paginate(
                recorder,  # type: ignore[arg-type]
                room_id,
                reader=("@alice:test.local", "TESTDEVICE"),
                lower=None,
                upper=upper,
                forward=forward,
                limit=100,
            )
            assert len(page) == 100
            assert 40 <= len(txn_ids) <= 60  # alice sent every other message
            nodes = await explain(conn, *recorder.queries[-1])
            assert "Sort" not in {node["Node Type"] for node in nodes}, nodes
            assert any(node.get("Index Name") == "events_timeline" for node in nodes), nodes
            txn_lookups = {
                n.get("Index Name") for n in nodes if n.get("Relation Name") == "event_txn_ids"
            }
            assert txn_lookups == {"event_txn_ids_event"}, nodes
        # Its bundled aggregations: probes of the relation indexes, not the room.
        recorder.queries.clear()
        await relations.aggregations(
            recorder,  # type: ignore[arg-type]
            {row.event_id: row.room_id for row in page},
            "@alice:test.local",
        )
        assert len(recorder.queries) == 2
        for query, params in recorder.queries:
            nodes = await explain(conn, query, params)
            used = {node.get("Index Name") for node in nodes} - {None}
            assert "BitmapAnd" not in {node["Node Type"] for node in nodes}, nodes
            assert used and used <= {"events_relations", "events_room_threads"}, used
