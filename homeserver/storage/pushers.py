"""Pushers: where to send a user's notifications (push gateways)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


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
    """Create or update the user's pusher for (app_id, pushkey)."""
    await conn.execute(
        f"INSERT INTO pushers ({_COLUMNS}, access_token_id, created_ts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = EXCLUDED.kind,"
        " app_display_name = EXCLUDED.app_display_name,"
        " device_display_name = EXCLUDED.device_display_name,"
        " profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data,"
        " access_token_id = EXCLUDED.access_token_id, failing_since = NULL",
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


async def delete_others(conn: AsyncConnection, user_id: str, app_id: str, pushkey: str) -> None:
    """Remove other users' pushers for the same (app_id, pushkey): a device that
    changes account stops getting the previous account's notifications."""
    await conn.execute(
        "DELETE FROM pushers WHERE app_id = %s AND pushkey = %s AND user_id <> %s",
        (app_id, pushkey, user_id),
    )
