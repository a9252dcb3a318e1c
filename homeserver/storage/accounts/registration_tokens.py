"""Registration tokens: invitations to register when registration needs a token.

`pending` counts registrations that passed the token stage but have not finished;
a token is usable while pending + completed < uses_allowed (or uses are unlimited).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class RegistrationTokenRow:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"
_VALID = (
    "(expiry_time IS NULL OR expiry_time > %(now)s)"
    " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)"
)


async def create_token(
    conn: AsyncConnection, token: str, uses_allowed: int | None, expiry_time: int | None
) -> RegistrationTokenRow | None:
    """None when the token already exists."""
    cur = await conn.execute(
        f"INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES (%s, %s, %s)"
        f" ON CONFLICT (token) DO NOTHING RETURNING {_COLUMNS}",
        (token, uses_allowed, expiry_time),
    )
    row = await cur.fetchone()
    return RegistrationTokenRow(*row) if row else None


async def list_tokens(
    conn: AsyncConnection, valid: bool | None, now_ms: int
) -> list[RegistrationTokenRow]:
    where = "TRUE" if valid is None else _VALID if valid else f"NOT ({_VALID})"
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM registration_tokens WHERE {where} ORDER BY token",
        {"now": now_ms},
    )
    return [RegistrationTokenRow(*row) for row in await cur.fetchall()]


async def get_token(conn: AsyncConnection, token: str) -> RegistrationTokenRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM registration_tokens WHERE token = %s", (token,)
    )
    row = await cur.fetchone()
    return RegistrationTokenRow(*row) if row else None


async def update_token(
    conn: AsyncConnection,
    token: str,
    *,
    set_uses_allowed: bool,
    uses_allowed: int | None,
    set_expiry_time: bool,
    expiry_time: int | None,
) -> RegistrationTokenRow | None:
    cur = await conn.execute(
        "UPDATE registration_tokens SET"
        " uses_allowed = CASE WHEN %(su)s THEN %(uses)s ELSE uses_allowed END,"
        " expiry_time = CASE WHEN %(se)s THEN %(exp)s ELSE expiry_time END"
        f" WHERE token = %(token)s RETURNING {_COLUMNS}",
        {
            "su": set_uses_allowed,
            "uses": uses_allowed,
            "se": set_expiry_time,
            "exp": expiry_time,
            "token": token,
        },
    )
    row = await cur.fetchone()
    return RegistrationTokenRow(*row) if row else None


async def delete_token(conn: AsyncConnection, token: str) -> bool:
    cur = await conn.execute("DELETE FROM registration_tokens WHERE token = %s", (token,))
    return cur.rowcount == 1


async def is_valid(conn: AsyncConnection, token: str, now_ms: int) -> bool:
    cur = await conn.execute(
        f"SELECT 1 FROM registration_tokens WHERE token = %(token)s AND {_VALID}",
        {"token": token, "now": now_ms},
    )
    return await cur.fetchone() is not None


async def reserve_use(conn: AsyncConnection, token: str, now_ms: int) -> bool:
    """Count a registration in progress against the token, if it is still valid."""
    cur = await conn.execute(
        f"UPDATE registration_tokens SET pending = pending + 1"
        f" WHERE token = %(token)s AND {_VALID}",
        {"token": token, "now": now_ms},
    )
    return cur.rowcount == 1


async def complete_use(conn: AsyncConnection, token: str) -> None:
    await conn.execute(
        "UPDATE registration_tokens SET pending = GREATEST(pending - 1, 0),"
        " completed = completed + 1 WHERE token = %s",
        (token,),
    )


async def release_use(conn: AsyncConnection, token: str) -> None:
    """A registration that reserved a use was abandoned."""
    await conn.execute(
        "UPDATE registration_tokens SET pending = GREATEST(pending - 1, 0) WHERE token = %s",
        (token,),
    )
