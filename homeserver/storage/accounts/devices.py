"""Devices: one per login session of a user, with where it was last seen."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None


_COLUMNS = "device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent"


async def upsert_device(
    conn: AsyncConnection, user_id: str, device_id: str, display_name: str | None, now_ms: int
) -> bool:
    """Create the device, or keep the existing one (renaming it if a name is given).
    True when it already existed."""
    cur = await conn.execute(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (user_id, device_id) DO UPDATE"
        " SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name)"
        " RETURNING (xmax <> 0)",
        (user_id, device_id, display_name, now_ms),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def list_devices(conn: AsyncConnection, user_id: str) -> list[DeviceRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE user_id = %s ORDER BY device_id", (user_id,)
    )
    return [DeviceRow(*row) for row in await cur.fetchall()]


async def get_device(conn: AsyncConnection, user_id: str, device_id: str) -> DeviceRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = await cur.fetchone()
    return DeviceRow(*row) if row else None


async def set_display_name(
    conn: AsyncConnection, user_id: str, device_id: str, display_name: str | None
) -> bool:
    """False when the user has no such device."""
    cur = await conn.execute(
        "UPDATE devices SET display_name = %s WHERE user_id = %s AND device_id = %s",
        (display_name, user_id, device_id),
    )
    return cur.rowcount == 1


async def delete_devices(conn: AsyncConnection, user_id: str, device_ids: list[str]) -> None:
    await conn.execute(
        "DELETE FROM devices WHERE user_id = %s AND device_id = ANY(%s)", (user_id, device_ids)
    )


async def other_device_ids(conn: AsyncConnection, user_id: str, keep_device_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT device_id FROM devices WHERE user_id = %s AND device_id <> %s",
        (user_id, keep_device_id),
    )
    return [row[0] for row in await cur.fetchall()]


async def all_device_ids(conn: AsyncConnection, user_id: str) -> list[str]:
    cur = await conn.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
    return [row[0] for row in await cur.fetchall()]


async def record_seen(
    conn: AsyncConnection,
    user_id: str,
    device_id: str,
    now_ms: int,
    ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        "UPDATE devices SET last_seen_ts = %s, last_seen_ip = %s, last_seen_user_agent = %s"
        " WHERE user_id = %s AND device_id = %s",
        (now_ms, ip, user_agent, user_id, device_id),
    )
