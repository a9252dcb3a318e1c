"""Access tokens, looked up by the SHA-256 digest of the token."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_id: int
    user_id: str
    device_id: str
    expires_ts: int | None
    is_admin: bool
    is_guest: bool
    deactivated: bool


async def lookup_access_token(conn: AsyncConnection, token_hash: bytes) -> TokenRow | None:
    cur = await conn.execute(
        "SELECT t.id, t.user_id, t.device_id, t.expires_ts, u.is_admin, u.is_guest, u.deactivated"
        " FROM access_tokens t JOIN users u USING (user_id) WHERE t.token_hash = %s",
        (token_hash,),
    )
    row = await cur.fetchone()
    return TokenRow(*row) if row else None


async def insert_access_token(
    conn: AsyncConnection,
    token_hash: bytes,
    user_id: str,
    device_id: str,
    *,
    now_ms: int,
    expires_ts: int | None = None,
    refresh_token_id: int | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO access_tokens"
        " (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (token_hash, user_id, device_id, now_ms, expires_ts, refresh_token_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
