"""OpenID tokens: short-lived proofs of a user's identity, kept as hashes."""

from __future__ import annotations

from psycopg import AsyncConnection


async def insert_token(
    conn: AsyncConnection, token_hash: bytes, user_id: str, expires_ts: int, now_ms: int
) -> None:
    """Store a token; expired ones go at the same time, so the table stays small."""
    await conn.execute("DELETE FROM openid_tokens WHERE expires_ts <= %s", (now_ms,))
    await conn.execute(
        "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (%s, %s, %s)",
        (token_hash, user_id, expires_ts),
    )


async def token_user(conn: AsyncConnection, token_hash: bytes, now_ms: int) -> str | None:
    """The user a token was issued to, while it has not expired."""
    cur = await conn.execute(
        "SELECT user_id FROM openid_tokens WHERE token_hash = %s AND expires_ts > %s",
        (token_hash, now_ms),
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])
