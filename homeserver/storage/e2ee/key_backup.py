"""Server-side key backup: a user's backup versions and the room keys stored in them."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class BackupVersionRow:
    version: int
    algorithm: str
    auth_data: str
    etag: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: str


_VERSION_COLUMNS = "version, algorithm, auth_data, etag"


async def create_version(
    conn: AsyncConnection, user_id: str, algorithm: str, auth_data: str
) -> int:
    """A new version, numbered after every version the user ever had; call in a
    transaction (the user's versions are locked while numbering)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('room_keys:' || %s, 0))", (user_id,)
    )
    cur = await conn.execute(
        "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)"
        " SELECT %s, coalesce(max(version), 0) + 1, %s, %s FROM room_key_backup_versions"
        " WHERE user_id = %s RETURNING version",
        (user_id, algorithm, auth_data, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def latest_version(
    conn: AsyncConnection, user_id: str, *, lock: bool = False
) -> BackupVersionRow | None:
    cur = await conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM room_key_backup_versions"
        " WHERE user_id = %s AND NOT deleted ORDER BY version DESC LIMIT 1"
        + (" FOR UPDATE" if lock else ""),
        (user_id,),
    )
    row = await cur.fetchone()
    return BackupVersionRow(*row) if row else None


async def get_version(
    conn: AsyncConnection, user_id: str, version: int, *, lock: bool = False
) -> BackupVersionRow | None:
    cur = await conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM room_key_backup_versions"
        " WHERE user_id = %s AND version = %s AND NOT deleted" + (" FOR UPDATE" if lock else ""),
        (user_id, version),
    )
    row = await cur.fetchone()
    return BackupVersionRow(*row) if row else None


async def version_existed(conn: AsyncConnection, user_id: str, version: int) -> bool:
    """Whether the version exists or existed (it may have been deleted since)."""
    cur = await conn.execute(
        "SELECT 1 FROM room_key_backup_versions WHERE user_id = %s AND version = %s",
        (user_id, version),
    )
    return await cur.fetchone() is not None


async def set_auth_data(conn: AsyncConnection, user_id: str, version: int, auth_data: str) -> None:
    await conn.execute(
        "UPDATE room_key_backup_versions SET auth_data = %s WHERE user_id = %s AND version = %s",
        (auth_data, user_id, version),
    )


async def delete_version(conn: AsyncConnection, user_id: str, version: int) -> None:
    """Mark the version deleted (its number is never reused) and drop its keys."""
    await conn.execute(
        "UPDATE room_key_backup_versions SET deleted = TRUE WHERE user_id = %s AND version = %s",
        (user_id, version),
    )
    await conn.execute(
        "DELETE FROM room_key_backup_keys WHERE user_id = %s AND version = %s",
        (user_id, version),
    )


async def bump_etag(conn: AsyncConnection, user_id: str, version: int) -> None:
    await conn.execute(
        "UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = %s AND version = %s",
        (user_id, version),
    )


async def count_keys(conn: AsyncConnection, user_id: str, version: int) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM room_key_backup_keys WHERE user_id = %s AND version = %s",
        (user_id, version),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# A stored session is replaced only by a better one: verified beats unverified, then a
# lower first message index (it decrypts more), then fewer forwards.
_UPSERT_SESSION = """
INSERT INTO room_key_backup_keys AS old (user_id, version, room_id, session_id,
    first_message_index, forwarded_count, is_verified, session_data)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
    first_message_index = EXCLUDED.first_message_index,
    forwarded_count = EXCLUDED.forwarded_count,
    is_verified = EXCLUDED.is_verified,
    session_data = EXCLUDED.session_data
WHERE (EXCLUDED.is_verified AND NOT old.is_verified)
   OR (EXCLUDED.is_verified = old.is_verified
       AND (EXCLUDED.first_message_index < old.first_message_index
            OR (EXCLUDED.first_message_index = old.first_message_index
                AND EXCLUDED.forwarded_count < old.forwarded_count)))
"""


async def put_sessions(
    conn: AsyncConnection, user_id: str, version: int, sessions: list[SessionRow]
) -> int:
    """Store sessions where they are new or better; returns how many were written."""
    async with conn.cursor() as cur:
        await cur.executemany(
            _UPSERT_SESSION,
            [
                (
                    user_id,
                    version,
                    s.room_id,
                    s.session_id,
                    s.first_message_index,
                    s.forwarded_count,
                    s.is_verified,
                    s.session_data,
                )
                for s in sessions
            ],
        )
        return max(cur.rowcount, 0)


def _scope(room_id: str | None, session_id: str | None) -> tuple[str, tuple[str, ...]]:
    clause: str = ""
    params: tuple[str, ...] = ()
    if room_id is not None:
        clause, params = " AND room_id = %s", (room_id,)
        if session_id is not None:
            clause, params = clause + " AND session_id = %s", (room_id, session_id)
    return clause, params


async def get_sessions(
    conn: AsyncConnection,
    user_id: str,
    version: int,
    room_id: str | None = None,
    session_id: str | None = None,
) -> list[SessionRow]:
    clause, params = _scope(room_id, session_id)
    cur = await conn.execute(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
        " session_data FROM room_key_backup_keys WHERE user_id = %s AND version = %s"
        + clause
        + " ORDER BY room_id, session_id",
        (user_id, version, *params),
    )
    return [SessionRow(*row) for row in await cur.fetchall()]


async def delete_sessions(
    conn: AsyncConnection,
    user_id: str,
    version: int,
    room_id: str | None = None,
    session_id: str | None = None,
) -> int:
    clause, params = _scope(room_id, session_id)
    cur = await conn.execute(
        "DELETE FROM room_key_backup_keys WHERE user_id = %s AND version = %s" + clause,
        (user_id, version, *params),
    )
    return cur.rowcount
