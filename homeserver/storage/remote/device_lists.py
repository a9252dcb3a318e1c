"""Device lists and cross-signing keys of remote users, cached from their servers."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class RemoteList:
    user_id: str
    stream_id: int
    stale: bool


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    user_id: str
    device_id: str
    keys_json: str | None
    display_name: str | None


async def get_lists(conn: AsyncConnection, user_ids: list[str]) -> dict[str, RemoteList]:
    cur = await conn.execute(
        "SELECT user_id, stream_id, stale FROM remote_device_lists WHERE user_id = ANY(%s)",
        (user_ids,),
    )
    return {row[0]: RemoteList(*row) for row in await cur.fetchall()}


async def lock_list(conn: AsyncConnection, user_id: str) -> RemoteList | None:
    """The cached list's header, locked until the transaction ends (updates of one user
    apply in turn)."""
    cur = await conn.execute(
        "SELECT user_id, stream_id, stale FROM remote_device_lists WHERE user_id = %s FOR UPDATE",
        (user_id,),
    )
    row = await cur.fetchone()
    return RemoteList(*row) if row else None


async def mark_stale(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("UPDATE remote_device_lists SET stale = TRUE WHERE user_id = %s", (user_id,))


async def replace_list(
    conn: AsyncConnection,
    user_id: str,
    stream_id: int,
    devices: list[RemoteDevice],
    cross_signing: dict[str, str],
    now: int,
) -> None:
    """Store a full device list (from /user/devices) in place of what was cached."""
    await conn.execute(
        "INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts)"
        " VALUES (%s, %s, FALSE, %s) ON CONFLICT (user_id) DO UPDATE"
        " SET stream_id = EXCLUDED.stream_id, stale = FALSE, updated_ts = EXCLUDED.updated_ts",
        (user_id, stream_id, now),
    )
    await conn.execute("DELETE FROM remote_devices WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM remote_cross_signing_keys WHERE user_id = %s", (user_id,))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO remote_devices (user_id, device_id, keys_json, display_name)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(d.user_id, d.device_id, d.keys_json, d.display_name) for d in devices],
        )
        await cur.executemany(
            "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)"
            " VALUES (%s, %s, %s)",
            [(user_id, key_type, key_json) for key_type, key_json in cross_signing.items()],
        )


async def apply_device_update(
    conn: AsyncConnection, device: RemoteDevice, deleted: bool, stream_id: int, now: int
) -> None:
    """One m.device_list_update on top of the cached list (whose header is locked)."""
    if deleted:
        await conn.execute(
            "DELETE FROM remote_devices WHERE user_id = %s AND device_id = %s",
            (device.user_id, device.device_id),
        )
    else:
        await conn.execute(
            "INSERT INTO remote_devices (user_id, device_id, keys_json, display_name)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO UPDATE"
            " SET keys_json = EXCLUDED.keys_json, display_name = EXCLUDED.display_name",
            (device.user_id, device.device_id, device.keys_json, device.display_name),
        )
    await conn.execute(
        "UPDATE remote_device_lists SET stream_id = %s, updated_ts = %s WHERE user_id = %s",
        (stream_id, now, device.user_id),
    )


async def set_cross_signing_key(
    conn: AsyncConnection, user_id: str, key_type: str, key_json: str
) -> None:
    await conn.execute(
        "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)"
        " VALUES (%s, %s, %s) ON CONFLICT (user_id, key_type)"
        " DO UPDATE SET key_json = EXCLUDED.key_json",
        (user_id, key_type, key_json),
    )


async def get_devices(conn: AsyncConnection, user_ids: list[str]) -> list[RemoteDevice]:
    cur = await conn.execute(
        "SELECT user_id, device_id, keys_json, display_name FROM remote_devices"
        " WHERE user_id = ANY(%s) ORDER BY user_id, device_id",
        (user_ids,),
    )
    return [RemoteDevice(*row) for row in await cur.fetchall()]


async def get_cross_signing_keys(
    conn: AsyncConnection, user_ids: list[str]
) -> list[tuple[str, str, str]]:
    """(user, key type, key JSON) of these users."""
    cur = await conn.execute(
        "SELECT user_id, key_type, key_json FROM remote_cross_signing_keys WHERE user_id = ANY(%s)",
        (user_ids,),
    )
    return [(row[0], row[1], row[2]) for row in await cur.fetchall()]
