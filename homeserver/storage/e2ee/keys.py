"""Device identity keys, one-time keys and fallback keys of local devices."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class DeviceKeysRow:
    user_id: str
    device_id: str
    key_json: str
    display_name: str | None


async def get_device_keys_json(conn: AsyncConnection, user_id: str, device_id: str) -> str | None:
    cur = await conn.execute(
        "SELECT key_json FROM e2e_device_keys WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def insert_device_keys(
    conn: AsyncConnection, user_id: str, device_id: str, key_json: str
) -> str | None:
    """Publish the device's keys unless it already has some; returns the keys it has."""
    cur = await conn.execute(
        "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING key_json",
        (user_id, device_id, key_json),
    )
    if await cur.fetchone() is not None:
        return key_json
    # Another transaction published first; this new statement sees what it committed.
    return await get_device_keys_json(conn, user_id, device_id)


async def query_device_keys(
    conn: AsyncConnection, user_ids: list[str], device_ids: list[str] | None
) -> list[DeviceKeysRow]:
    """Keys of existing devices: every device of `user_ids`, or only `device_ids` of them."""
    query = (
        "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
        " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
        " WHERE k.user_id = ANY(%s)"
    )
    params: tuple[object, ...] = (user_ids,)
    if device_ids is not None:
        query += " AND k.device_id = ANY(%s)"
        params = (user_ids, device_ids)
    cur = await conn.execute(query, params)
    return [DeviceKeysRow(*row) for row in await cur.fetchall()]


async def delete_device_keys(conn: AsyncConnection, user_id: str, device_ids: list[str]) -> None:
    """Forget every key of these devices (they were deleted)."""
    for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
        await conn.execute(
            f"DELETE FROM {table} WHERE user_id = %s AND device_id = ANY(%s)",
            (user_id, device_ids),
        )


async def existing_one_time_keys(
    conn: AsyncConnection, user_id: str, device_id: str, ids: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Stored JSON of the given (algorithm, key id)s that already exist."""
    cur = await conn.execute(
        "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys"
        " WHERE user_id = %s AND device_id = %s"
        " AND (algorithm, key_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (user_id, device_id, [a for a, _ in ids], [k for _, k in ids]),
    )
    return {(row[0], row[1]): row[2] for row in await cur.fetchall()}


async def add_one_time_keys(
    conn: AsyncConnection, user_id: str, device_id: str, keys: list[tuple[str, str, str]]
) -> None:
    """Store (algorithm, key id, key JSON)s; ids already stored are left alone."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(user_id, device_id, a, k, j) for a, k, j in keys],
        )


async def one_time_key_counts(
    conn: AsyncConnection, user_id: str, device_id: str
) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT algorithm, count(*) FROM e2e_one_time_keys"
        " WHERE user_id = %s AND device_id = %s GROUP BY algorithm",
        (user_id, device_id),
    )
    return {row[0]: int(row[1]) for row in await cur.fetchall()}


async def set_fallback_key(
    conn: AsyncConnection, user_id: str, device_id: str, algorithm: str, key_id: str, key_json: str
) -> None:
    """Store the device's fallback key for `algorithm`; re-uploading the same key keeps its
    used flag, a new key starts unused."""
    await conn.execute(
        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
        " SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,"
        " used = e2e_fallback_keys.used AND e2e_fallback_keys.key_id = EXCLUDED.key_id"
        " AND e2e_fallback_keys.key_json = EXCLUDED.key_json",
        (user_id, device_id, algorithm, key_id, key_json),
    )


async def unused_fallback_key_types(
    conn: AsyncConnection, user_id: str, device_id: str
) -> list[str]:
    cur = await conn.execute(
        "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = %s AND device_id = %s"
        " AND NOT used ORDER BY algorithm",
        (user_id, device_id),
    )
    return [row[0] for row in await cur.fetchall()]


# One statement takes a key: the row is locked as it is picked, and rows another claimer
# has locked are skipped, so concurrent claims never get the same key and never come back
# empty-handed while unclaimed keys remain.
_CLAIM_ONE_TIME = """
DELETE FROM e2e_one_time_keys k USING (
    SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys
    WHERE user_id = %s AND device_id = %s AND algorithm = %s
    ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
) picked
WHERE k.user_id = picked.user_id AND k.device_id = picked.device_id
  AND k.algorithm = picked.algorithm AND k.key_id = picked.key_id
RETURNING k.key_id, k.key_json
"""


async def claim_one_time_key(
    conn: AsyncConnection, user_id: str, device_id: str, algorithm: str
) -> tuple[str, str] | None:
    """Remove and return the oldest (key id, key JSON), or None when none is left."""
    cur = await conn.execute(_CLAIM_ONE_TIME, (user_id, device_id, algorithm))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


async def claim_fallback_key(
    conn: AsyncConnection, user_id: str, device_id: str, algorithm: str
) -> tuple[str, str] | None:
    """The device's fallback key, marked used; it may be handed out again."""
    cur = await conn.execute(
        "UPDATE e2e_fallback_keys SET used = TRUE"
        " WHERE user_id = %s AND device_id = %s AND algorithm = %s RETURNING key_id, key_json",
        (user_id, device_id, algorithm),
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None
