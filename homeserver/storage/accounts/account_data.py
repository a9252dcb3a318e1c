"""Account data (global and per room) and room tags, on the `account_data` stream.

Writers pass the stream position they were allocated (see storage/core/streams.py);
each row keeps the position of its latest change, so sync reads what changed
since a token with `account_data_since`.

Room tags are kept row by row in `room_tags`; each change also rewrites the
room's `m.tag` account data from them, so sync reads tags like any account data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

STREAM = "account_data"
GLOBAL = ""  # room_id of global account data
TAG_TYPE = "m.tag"
IGNORED_USER_LIST = "m.ignored_user_list"

# Advisory lock class (the first key) serialising one user's account data writers.
_USER_LOCK_CLASS = 0x61636374


@dataclass(frozen=True, slots=True)
class AccountDataRow:
    room_id: str | None  # None for global account data
    type: str
    content: dict[str, Any]
    stream_id: int


def _jsonb(value: Any) -> Jsonb:
    # orjson: faster than the stdlib, and the same encoder that parsed the request.
    return Jsonb(value, dumps=lambda obj: orjson.dumps(obj).decode())


async def lock_user(conn: AsyncConnection, user_id: str) -> None:
    """Serialise the user's account data writes until the transaction ends, so that a
    rewritten m.tag always reflects every committed tag change."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_USER_LOCK_CLASS, user_id)
    )


async def put_account_data(
    conn: AsyncConnection,
    user_id: str,
    room_id: str,
    type_: str,
    content: Mapping[str, Any],
    stream_id: int,
) -> None:
    """Set global (room_id GLOBAL) or room account data at position `stream_id`."""
    await conn.execute(
        "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, room_id, type)"
        " DO UPDATE SET content = EXCLUDED.content, stream_id = EXCLUDED.stream_id",
        (user_id, room_id, type_, _jsonb(content), stream_id),
    )


async def get_account_data(
    conn: AsyncConnection, user_id: str, room_id: str, type_: str
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT content::text FROM account_data WHERE user_id = %s AND room_id = %s AND type = %s",
        (user_id, room_id, type_),
    )
    row = await cur.fetchone()
    return orjson.loads(row[0]) if row else None


async def ignored_users(conn: AsyncConnection, user_id: str) -> frozenset[str]:
    """The users `user_id` ignores (the keys of `m.ignored_user_list`'s ignored_users)."""
    cur = await conn.execute(
        "SELECT jsonb_object_keys(content -> 'ignored_users') FROM account_data"
        " WHERE user_id = %s AND room_id = '' AND type = %s"
        " AND jsonb_typeof(content -> 'ignored_users') = 'object'",
        (user_id, IGNORED_USER_LIST),
    )
    return frozenset(row[0] for row in await cur.fetchall())


async def ignorers(conn: AsyncConnection, senders: list[str]) -> dict[str, set[str]]:
    """For each of `senders`, the users who ignore them (through a partial GIN index of
    the ignore lists, so cheap when nobody does)."""
    if not senders:
        return {}
    cur = await conn.execute(
        # The type is spelled out, not a parameter, so that a prepared plan still
        # matches the index's predicate.
        "SELECT user_id, content -> 'ignored_users' FROM account_data"
        " WHERE room_id = '' AND type = 'm.ignored_user_list'"
        " AND content -> 'ignored_users' ?| %s::text[]",
        (senders,),
    )
    found: dict[str, set[str]] = {}
    for user_id, ignored in await cur.fetchall():
        for sender in senders:
            if sender in ignored:
                found.setdefault(sender, set()).add(user_id)
    return found


async def account_data_since(
    conn: AsyncConnection, user_id: str, position: int, up_to: int | None = None
) -> list[AccountDataRow]:
    """The user's account data changed after `position` (and at or before `up_to`),
    global and per room, in stream order; each (room, type) appears once, as it is now."""
    cur = await conn.execute(
        "SELECT room_id, type, content::text, stream_id FROM account_data"
        " WHERE user_id = %s AND stream_id > %s AND (%s::bigint IS NULL OR stream_id <= %s)"
        " ORDER BY stream_id",
        (user_id, position, up_to, up_to),
    )
    return [
        AccountDataRow(room_id or None, type_, orjson.loads(content), stream_id)
        for room_id, type_, content, stream_id in await cur.fetchall()
    ]


async def get_room_tags(conn: AsyncConnection, user_id: str, room_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT tag, content::text FROM room_tags WHERE user_id = %s AND room_id = %s",
        (user_id, room_id),
    )
    return {tag: orjson.loads(content) for tag, content in await cur.fetchall()}


async def _publish_tags(conn: AsyncConnection, user_id: str, room_id: str, stream_id: int) -> None:
    """Rewrite the room's m.tag account data from room_tags."""
    tags = await get_room_tags(conn, user_id, room_id)
    await put_account_data(conn, user_id, room_id, TAG_TYPE, {"tags": tags}, stream_id)


async def put_room_tag(
    conn: AsyncConnection,
    user_id: str,
    room_id: str,
    tag: str,
    content: Mapping[str, Any],
    stream_id: int,
) -> None:
    await conn.execute(
        "INSERT INTO room_tags (user_id, room_id, tag, content) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (user_id, room_id, tag) DO UPDATE SET content = EXCLUDED.content",
        (user_id, room_id, tag, _jsonb(content)),
    )
    await _publish_tags(conn, user_id, room_id, stream_id)


async def delete_room_tag(
    conn: AsyncConnection, user_id: str, room_id: str, tag: str, stream_id: int
) -> bool:
    """Remove a tag; False (and nothing written) when there was no such tag."""
    cur = await conn.execute(
        "DELETE FROM room_tags WHERE user_id = %s AND room_id = %s AND tag = %s",
        (user_id, room_id, tag),
    )
    if cur.rowcount == 0:
        return False
    await _publish_tags(conn, user_id, room_id, stream_id)
    return True


async def replace_room_tags(
    conn: AsyncConnection,
    user_id: str,
    room_id: str,
    tags: Mapping[str, Mapping[str, Any]],
    stream_id: int,
) -> None:
    """Set the room's whole tag set at once (an m.tag written as room account data)."""
    await conn.execute(
        "DELETE FROM room_tags WHERE user_id = %s AND room_id = %s", (user_id, room_id)
    )
    if tags:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO room_tags (user_id, room_id, tag, content) VALUES (%s, %s, %s, %s)",
                [(user_id, room_id, tag, _jsonb(content)) for tag, content in tags.items()],
            )
    await _publish_tags(conn, user_id, room_id, stream_id)
