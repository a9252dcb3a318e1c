"""Access, refresh and login tokens, looked up by the SHA-256 digest of the token."""

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
    refresh_token_id: int | None
    used: bool
    shadow_banned: bool
    suspended: bool
    locked: bool
    # the user's rate-limit override (messages per second, burst), if an admin set one
    override_per_second: float | None
    override_burst: int | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    token_id: int
    user_id: str
    device_id: str
    expires_ts: int | None
    next_token_id: int | None


async def lookup_access_token(conn: AsyncConnection, token_hash: bytes) -> TokenRow | None:
    cur = await conn.execute(
        "SELECT t.id, t.user_id, t.device_id, t.expires_ts, u.is_admin, u.is_guest, u.deactivated,"
        " t.refresh_token_id, t.used, u.shadow_banned, u.suspended, u.locked,"
        " o.messages_per_second, o.burst_count"
        " FROM access_tokens t JOIN users u USING (user_id)"
        " LEFT JOIN ratelimit_overrides o USING (user_id) WHERE t.token_hash = %s",
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


async def mark_access_token_used(
    conn: AsyncConnection, token_id: int, refresh_token_id: int
) -> None:
    """First use of a refreshed access token: the refresh token it replaced dies now."""
    async with conn.transaction():
        await conn.execute("UPDATE access_tokens SET used = TRUE WHERE id = %s", (token_id,))
        await conn.execute(
            "DELETE FROM refresh_tokens WHERE next_token_id = %s", (refresh_token_id,)
        )


async def delete_access_token(conn: AsyncConnection, token_id: int) -> None:
    await conn.execute("DELETE FROM access_tokens WHERE id = %s", (token_id,))


async def delete_other_access_tokens(
    conn: AsyncConnection, user_id: str, device_id: str, keep_token_id: int
) -> list[int]:
    """Every access token of a device but one (the one making the request); the ids
    of those deleted."""
    cur = await conn.execute(
        "DELETE FROM access_tokens WHERE user_id = %s AND device_id = %s AND id <> %s RETURNING id",
        (user_id, device_id, keep_token_id),
    )
    return [row[0] for row in await cur.fetchall()]


async def insert_refresh_token(
    conn: AsyncConnection, token_hash: bytes, user_id: str, device_id: str, *, now_ms: int
) -> int:
    cur = await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (token_hash, user_id, device_id, now_ms),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def lookup_refresh_token(conn: AsyncConnection, token_hash: bytes) -> RefreshTokenRow | None:
    cur = await conn.execute(
        "SELECT r.id, r.user_id, r.device_id, r.expires_ts, r.next_token_id"
        " FROM refresh_tokens r JOIN users u USING (user_id)"
        " WHERE r.token_hash = %s AND NOT u.deactivated FOR UPDATE OF r",
        (token_hash,),
    )
    row = await cur.fetchone()
    return RefreshTokenRow(*row) if row else None


async def replace_refresh_token(conn: AsyncConnection, old_id: int, new_id: int) -> list[int]:
    """Point the old refresh token at its successor and drop the successor it had
    before (handed out but never used), with that successor's access token; the ids
    of the access tokens issued with the old refresh token, which are replaced."""
    cur = await conn.execute("SELECT next_token_id FROM refresh_tokens WHERE id = %s", (old_id,))
    row = await cur.fetchone()
    await conn.execute(
        "UPDATE refresh_tokens SET next_token_id = %s WHERE id = %s", (new_id, old_id)
    )
    if row is not None and row[0] is not None:
        await conn.execute("DELETE FROM refresh_tokens WHERE id = %s", (row[0],))
    # The access tokens issued with the old refresh token are replaced too.
    cur = await conn.execute(
        "DELETE FROM access_tokens WHERE refresh_token_id = %s RETURNING id", (old_id,)
    )
    replaced = [row[0] for row in await cur.fetchall()]
    # Using the new refresh token retires the old one, like using the new access token.
    await conn.execute("DELETE FROM refresh_tokens WHERE next_token_id = %s", (old_id,))
    return replaced


async def delete_device_tokens(
    conn: AsyncConnection, user_id: str, device_ids: list[str]
) -> list[int]:
    """Every token of these devices; the ids of the access tokens deleted."""
    cur = await conn.execute(
        "DELETE FROM access_tokens WHERE user_id = %s AND device_id = ANY(%s) RETURNING id",
        (user_id, device_ids),
    )
    deleted = [row[0] for row in await cur.fetchall()]
    await conn.execute(
        "DELETE FROM refresh_tokens WHERE user_id = %s AND device_id = ANY(%s)",
        (user_id, device_ids),
    )
    return deleted


async def delete_user_tokens(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("DELETE FROM access_tokens WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM refresh_tokens WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM login_tokens WHERE user_id = %s", (user_id,))


@dataclass(frozen=True, slots=True)
class LoginTokenRow:
    user_id: str
    # The single sign-on provider and its session the token comes from, if any.
    auth_provider: tuple[str, str] | None


async def insert_login_token(
    conn: AsyncConnection,
    token_hash: bytes,
    user_id: str,
    expires_ts: int,
    auth_provider: tuple[str, str] | None = None,
) -> None:
    provider_id, session_id = auth_provider or (None, None)
    await conn.execute(
        "INSERT INTO login_tokens (token_hash, user_id, expires_ts, auth_provider_id,"
        " auth_provider_session_id) VALUES (%s, %s, %s, %s, %s)",
        (token_hash, user_id, expires_ts, provider_id, session_id),
    )


async def consume_login_token(
    conn: AsyncConnection, token_hash: bytes, now_ms: int
) -> LoginTokenRow | None:
    """Whom a login token was issued to, if it is unexpired; it works once."""
    cur = await conn.execute(
        "DELETE FROM login_tokens WHERE token_hash = %s"
        " RETURNING user_id, expires_ts, auth_provider_id, auth_provider_session_id",
        (token_hash,),
    )
    row = await cur.fetchone()
    await conn.execute("DELETE FROM login_tokens WHERE expires_ts <= %s", (now_ms,))
    if row is None or row[1] <= now_ms:
        return None
    provider = (str(row[2]), str(row[3])) if row[2] is not None and row[3] is not None else None
    return LoginTokenRow(str(row[0]), provider)


async def set_device_auth_provider(
    conn: AsyncConnection, user_id: str, device_id: str, auth_provider: tuple[str, str] | None
) -> None:
    """Which provider session a device was signed in through (None: none)."""
    await conn.execute(
        "DELETE FROM device_auth_providers WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    if auth_provider is not None:
        await conn.execute(
            "INSERT INTO device_auth_providers (user_id, device_id, auth_provider_id,"
            " auth_provider_session_id) VALUES (%s, %s, %s, %s)",
            (user_id, device_id, *auth_provider),
        )


async def devices_of_provider_session(
    conn: AsyncConnection, auth_provider_id: str, session_id: str
) -> list[tuple[str, str]]:
    """(user id, device id) of the devices signed in through a provider's session."""
    cur = await conn.execute(
        "SELECT user_id, device_id FROM device_auth_providers"
        " WHERE auth_provider_id = %s AND auth_provider_session_id = %s",
        (auth_provider_id, session_id),
    )
    return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
