"""Pushers: where to send a user's notifications (push gateways)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from homeserver.storage.push.notifications import USER_SEPARATOR
from homeserver.storage.push.room_actions import user_actions


@dataclass(frozen=True, slots=True)
class PusherRow:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]


_COLUMNS = (
    "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data"
)


async def pushers_of_user(conn: AsyncConnection, user_id: str) -> list[PusherRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM pushers WHERE user_id = %s ORDER BY created_ts, app_id, pushkey",
        (user_id,),
    )
    return [PusherRow(*row) for row in await cur.fetchall()]


async def upsert_pusher(
    conn: AsyncConnection, row: PusherRow, token_id: int | None, now_ms: int
) -> None:
    """Create or update the user's pusher for (app_id, pushkey).

    A new pusher starts after the newest stored event: it is sent only what comes
    after it was set. An update keeps its position and ends any backoff."""
    await conn.execute(
        f"INSERT INTO pushers ({_COLUMNS}, access_token_id, created_ts, last_stream_ordering)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " (SELECT COALESCE(max(stream_ordering), 0) FROM events))"
        " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = EXCLUDED.kind,"
        " app_display_name = EXCLUDED.app_display_name,"
        " device_display_name = EXCLUDED.device_display_name,"
        " profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data,"
        " access_token_id = EXCLUDED.access_token_id, failing_since = NULL, retry_at = NULL",
        (
            row.user_id,
            row.app_id,
            row.pushkey,
            row.kind,
            row.app_display_name,
            row.device_display_name,
            row.profile_tag,
            row.lang,
            Jsonb(row.data, dumps=lambda o: orjson.dumps(o).decode()),
            token_id,
            now_ms,
        ),
    )


async def delete_pusher(conn: AsyncConnection, user_id: str, app_id: str, pushkey: str) -> None:
    await conn.execute(
        "DELETE FROM pushers WHERE user_id = %s AND app_id = %s AND pushkey = %s",
        (user_id, app_id, pushkey),
    )


async def delete_user_pushers(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("DELETE FROM pushers WHERE user_id = %s", (user_id,))


async def delete_token_pushers(conn: AsyncConnection, user_id: str, token_ids: list[int]) -> None:
    """The pushers set through these (revoked) access tokens."""
    await conn.execute(
        "DELETE FROM pushers WHERE user_id = %s AND access_token_id = ANY(%s)",
        (user_id, token_ids),
    )


async def move_to_token(conn: AsyncConnection, old_token_ids: list[int], new_token_id: int) -> None:
    """The pushers set through replaced access tokens now belong to their successor."""
    await conn.execute(
        "UPDATE pushers SET access_token_id = %s WHERE access_token_id = ANY(%s)",
        (new_token_id, old_token_ids),
    )


async def delete_others(conn: AsyncConnection, user_id: str, app_id: str, pushkey: str) -> None:
    """Remove other users' pushers for the same (app_id, pushkey): a device that
    changes account stops getting the previous account's notifications."""
    await conn.execute(
        "DELETE FROM pushers WHERE app_id = %s AND pushkey = %s AND user_id <> %s",
        (app_id, pushkey, user_id),
    )


# -- delivery -------------------------------------------------------------------------

# First key of the two-key advisory lock form: a namespace for pusher locks.
_LOCK_NAMESPACE = 0x50757368  # "Push"


@dataclass(frozen=True, slots=True)
class PusherKey:
    user_id: str
    app_id: str
    pushkey: str


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """What the sender reads of a pusher before each batch: where it is, its backoff."""

    data: dict[str, Any]
    created_ts: int
    last_stream_ordering: int
    failing_since: int | None
    retry_at: int | None


async def pushers_to_wake(
    conn: AsyncConnection, user_ids: Sequence[str], room_ids: Sequence[str], kind: str = "http"
) -> list[PusherKey]:
    """The pushers of a kind that a commit may have given work: those of the users it
    notified one by one (in a big room thousands, sent as one text rather than a value
    each), and those of the local users joined to the rooms it wrote a room row for
    (found from the few pushers rather than the many members). One statement: it runs
    after every message."""
    return await (await pushers_to_wake_queued(conn, user_ids, room_ids, kind))()


async def pushers_to_wake_queued(
    conn: AsyncConnection,
    user_ids: Sequence[str],
    room_ids: Sequence[str],
    kind: str = "http",
    *,
    written_with: tuple[str, Sequence[Any]] | None = None,
) -> Callable[[], Awaitable[list[PusherKey]]]:
    """`pushers_to_wake` sent without waiting for its answer (in pipeline mode, inside
    the transaction that stores the push actions: it comes back with the commit); the
    returned function reads it once the pipeline has synced. `written_with`: a write
    (statement, parameters) made by the same statement, ahead of the lookup."""
    query = (
        "SELECT user_id, app_id, pushkey FROM pushers"
        " WHERE user_id = ANY(string_to_array(%s, %s)) AND kind = %s"
        " UNION SELECT p.user_id, p.app_id, p.pushkey FROM pushers p WHERE p.kind = %s"
        " AND EXISTS (SELECT 1 FROM push_member_spans s WHERE s.user_id = p.user_id"
        " AND s.room_id = ANY(%s) AND s.left_at IS NULL)"
    )
    params: tuple[Any, ...] = (
        USER_SEPARATOR.join(user_ids),
        USER_SEPARATOR,
        kind,
        kind,
        list(room_ids),
    )
    if written_with is not None:
        write, write_params = written_with
        query = f"WITH written AS ({write}) {query}"
        params = (*write_params, *params)
    cur = await conn.execute(query, params)

    async def fetch() -> list[PusherKey]:
        return [PusherKey(*row) for row in await cur.fetchall()]

    return fetch


async def pushers_with_work(
    conn: AsyncConnection, now_ms: int, kind: str = "http"
) -> list[PusherKey]:
    """Pushers of a kind due (no backoff running) with push actions they were not sent."""
    cur = await conn.execute(
        "SELECT p.user_id, p.app_id, p.pushkey FROM pushers p"
        " WHERE p.kind = %s AND (p.retry_at IS NULL OR p.retry_at <= %s)"
        " AND EXISTS (SELECT 1 FROM "
        + user_actions("{t}.stream_ordering > p.last_stream_ordering", user="p.user_id")
        + " a)",
        (kind, now_ms),
    )
    return [PusherKey(*row) for row in await cur.fetchall()]


async def delivery_state(
    conn: AsyncConnection, key: PusherKey, kind: str = "http"
) -> DeliveryState | None:
    cur = await conn.execute(
        "SELECT data, created_ts, last_stream_ordering, failing_since, retry_at FROM pushers"
        " WHERE user_id = %s AND app_id = %s AND pushkey = %s AND kind = %s",
        (key.user_id, key.app_id, key.pushkey, kind),
    )
    row = await cur.fetchone()
    return None if row is None else DeliveryState(*row)


async def advance(conn: AsyncConnection, key: PusherKey, stream_ordering: int) -> None:
    """Record that everything up to `stream_ordering` was delivered (or given up on);
    a success also ends the backoff."""
    await conn.execute(
        "UPDATE pushers SET last_stream_ordering = GREATEST(last_stream_ordering, %s),"
        " failing_since = NULL, retry_at = NULL"
        " WHERE user_id = %s AND app_id = %s AND pushkey = %s",
        (stream_ordering, key.user_id, key.app_id, key.pushkey),
    )


async def record_failure(
    conn: AsyncConnection, key: PusherKey, failing_since: int, retry_at: int
) -> None:
    await conn.execute(
        "UPDATE pushers SET failing_since = %s, retry_at = %s"
        " WHERE user_id = %s AND app_id = %s AND pushkey = %s",
        (failing_since, retry_at, key.user_id, key.app_id, key.pushkey),
    )


async def try_lock(conn: AsyncConnection, key: PusherKey) -> bool:
    """Take the session-level lock on a pusher; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s || ' ' || %s || ' ' || %s))",
        (_LOCK_NAMESPACE, key.user_id, key.app_id, key.pushkey),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, key: PusherKey) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(%s || ' ' || %s || ' ' || %s))",
        (_LOCK_NAMESPACE, key.user_id, key.app_id, key.pushkey),
    )
