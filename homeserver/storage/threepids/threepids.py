"""Third-party ids (email addresses) of accounts, and their validation sessions."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class ThreepidRow:
    medium: str
    address: str
    validated_at: int
    added_at: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    medium: str
    address: str
    client_secret: str
    last_send_attempt: int
    token_hash: bytes | None
    token_expires_ts: int
    next_link: str | None
    validated_at: int | None
    consumed_ts: int | None


_SESSION_COLUMNS = (
    "session_id, medium, address, client_secret, last_send_attempt, token_hash,"
    " token_expires_ts, next_link, validated_at, consumed_ts"
)


# -- addresses of accounts ----------------------------------------------------------------


async def user_of(conn: AsyncConnection, medium: str, address: str) -> str | None:
    cur = await conn.execute(
        "SELECT user_id FROM user_threepids WHERE medium = %s AND address = %s",
        (medium, address),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def threepids_of_user(conn: AsyncConnection, user_id: str) -> list[ThreepidRow]:
    cur = await conn.execute(
        "SELECT medium, address, validated_at, added_at FROM user_threepids"
        " WHERE user_id = %s ORDER BY added_at, medium, address",
        (user_id,),
    )
    return [ThreepidRow(*row) for row in await cur.fetchall()]


async def add_threepid(
    conn: AsyncConnection, user_id: str, medium: str, address: str, validated_at: int, now: int
) -> str:
    """Give the address to the user unless it is someone's already; its owner after."""
    await conn.execute(
        "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (medium, address) DO NOTHING",
        (medium, address, user_id, validated_at, now),
    )
    owner = await user_of(conn, medium, address)
    assert owner is not None
    return owner


async def delete_threepid(conn: AsyncConnection, user_id: str, medium: str, address: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM user_threepids WHERE user_id = %s AND medium = %s AND address = %s",
        (user_id, medium, address),
    )
    return cur.rowcount > 0


async def delete_user_threepids(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("DELETE FROM user_threepids WHERE user_id = %s", (user_id,))


# -- validation sessions --------------------------------------------------------------------


async def open_session(
    conn: AsyncConnection, purpose: str, medium: str, address: str, client_secret: str, now: int
) -> SessionRow | None:
    """The session this client started for this address and purpose and has not
    validated yet."""
    cur = await conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
        " WHERE client_secret = %s AND medium = %s AND address = %s AND purpose = %s"
        " AND validated_at IS NULL AND token_expires_ts > %s"
        " ORDER BY created_ts DESC LIMIT 1",
        (client_secret, medium, address, purpose, now),
    )
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def create_session(
    conn: AsyncConnection, session: SessionRow, purpose: str, now: int
) -> None:
    await conn.execute(
        f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS}, purpose, created_ts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL, %s, %s)",
        (
            session.session_id,
            session.medium,
            session.address,
            session.client_secret,
            session.last_send_attempt,
            session.token_hash,
            session.token_expires_ts,
            session.next_link,
            purpose,
            now,
        ),
    )


async def renew_token(
    conn: AsyncConnection,
    session_id: str,
    send_attempt: int,
    token_hash: bytes | None,
    expires_ts: int,
    next_link: str | None,
) -> None:
    """A later send attempt: a new token replaces the previous one (whose link stops
    working)."""
    await conn.execute(
        "UPDATE threepid_validation_sessions SET last_send_attempt = %s, token_hash = %s,"
        " token_expires_ts = %s, next_link = %s WHERE session_id = %s",
        (send_attempt, token_hash, expires_ts, next_link, session_id),
    )


async def session_for_update(conn: AsyncConnection, session_id: str) -> SessionRow | None:
    """The session, locked until the end of the transaction (submitting its token)."""
    cur = await conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
        " WHERE session_id = %s FOR UPDATE",
        (session_id,),
    )
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def mark_validated(conn: AsyncConnection, session_id: str, now: int) -> None:
    """The token was right: it is spent, and the session proves the address."""
    await conn.execute(
        "UPDATE threepid_validation_sessions SET validated_at = %s, token_hash = NULL"
        " WHERE session_id = %s",
        (now, session_id),
    )


async def validated_session(
    conn: AsyncConnection, session_id: str, client_secret: str, validated_after: int
) -> SessionRow | None:
    """The session if validated (since `validated_after`) and not spent yet."""
    cur = await conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
        " WHERE session_id = %s AND client_secret = %s AND validated_at > %s"
        " AND consumed_ts IS NULL",
        (session_id, client_secret, validated_after),
    )
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def consume(conn: AsyncConnection, session_id: str, now: int) -> bool:
    """Spend a validated session; False when another request spent it first."""
    cur = await conn.execute(
        "UPDATE threepid_validation_sessions SET consumed_ts = %s"
        " WHERE session_id = %s AND consumed_ts IS NULL",
        (now, session_id),
    )
    return cur.rowcount > 0


async def delete_old_sessions(conn: AsyncConnection, before: int) -> None:
    """Sessions whose token expired before `before` and that nothing can use any more."""
    await conn.execute(
        "DELETE FROM threepid_validation_sessions WHERE token_expires_ts < %s"
        " AND (validated_at IS NULL OR validated_at < %s OR consumed_ts IS NOT NULL)",
        (before, before),
    )
