"""Other servers' verify keys and their signed key responses (see 0007_federation)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int


async def get_keys(
    conn: AsyncConnection, server_name: str, key_ids: Sequence[str]
) -> dict[str, StoredKey]:
    cur = await conn.execute(
        "SELECT key_id, verify_key, valid_until_ts FROM server_keys"
        " WHERE server_name = %s AND key_id = ANY(%s)",
        (server_name, list(key_ids)),
    )
    return {row[0]: StoredKey(row[0], row[1], int(row[2])) for row in await cur.fetchall()}


async def store_response(
    conn: AsyncConnection,
    server_name: str,
    response_json: str,
    valid_until_ts: int,
    keys: Iterable[StoredKey],
    now_ms: int,
) -> None:
    """Record a verified response and its keys. A key's validity never shrinks (a replayed
    older response cannot take back what a newer one granted), and the kept response is
    the one valid the longest."""
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts,"
                " fetched_ts) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = EXCLUDED.verify_key, fetched_ts = EXCLUDED.fetched_ts,"
                " valid_until_ts = GREATEST(server_keys.valid_until_ts, EXCLUDED.valid_until_ts)",
                [(server_name, k.key_id, k.verify_key, k.valid_until_ts, now_ms) for k in keys],
            )
        await conn.execute(
            "INSERT INTO server_key_responses (server_name, response_json, valid_until_ts,"
            " fetched_ts) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (server_name) DO UPDATE SET response_json = EXCLUDED.response_json,"
            " valid_until_ts = EXCLUDED.valid_until_ts, fetched_ts = EXCLUDED.fetched_ts"
            " WHERE server_key_responses.valid_until_ts <= EXCLUDED.valid_until_ts",
            (server_name, response_json, valid_until_ts, now_ms),
        )


async def get_response(conn: AsyncConnection, server_name: str) -> tuple[str, int] | None:
    """The kept key response of a server and its valid_until_ts."""
    cur = await conn.execute(
        "SELECT response_json, valid_until_ts FROM server_key_responses WHERE server_name = %s",
        (server_name,),
    )
    row = await cur.fetchone()
    return (row[0], int(row[1])) if row else None
