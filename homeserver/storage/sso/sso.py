"""Single sign-on rows: external ids, logins between redirect and callback, and
username-picking sessions. Logins and sessions are taken once (deleted as read)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class SsoLogin:
    state: str
    browser_hash: bytes
    idp_id: str
    nonce: str
    code_verifier: str | None
    redirect_url: str | None
    uia_session: str | None
    expires_ts: int


@dataclass(frozen=True, slots=True)
class UsernameSession:
    idp_id: str
    external_id: str
    localpart: str | None
    display_name: str | None
    auth_session: str | None  # the provider's session id (sid), for back-channel logout
    redirect_url: str
    expires_ts: int


async def user_for_external_id(
    conn: AsyncConnection, auth_provider: str, external_id: str
) -> str | None:
    cur = await conn.execute(
        "SELECT user_id FROM user_external_ids WHERE auth_provider = %s AND external_id = %s",
        (auth_provider, external_id),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def link_external_id(
    conn: AsyncConnection, auth_provider: str, external_id: str, user_id: str
) -> bool:
    """Link the subject to the account; False when it is linked already."""
    cur = await conn.execute(
        "INSERT INTO user_external_ids (auth_provider, external_id, user_id)"
        " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (auth_provider, external_id, user_id),
    )
    return cur.rowcount == 1


async def external_ids_of_user(conn: AsyncConnection, user_id: str) -> list[tuple[str, str]]:
    """The account's (auth_provider, external_id) links, in a stable order."""
    cur = await conn.execute(
        "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = %s"
        " ORDER BY auth_provider, external_id",
        (user_id,),
    )
    return [(str(row[0]), str(row[1])) for row in await cur.fetchall()]


async def replace_external_ids(
    conn: AsyncConnection, user_id: str, links: list[tuple[str, str]]
) -> bool:
    """Make `links` the account's only links (call inside a transaction); False, with
    the transaction to be rolled back, when one of them belongs to another account."""
    await conn.execute("DELETE FROM user_external_ids WHERE user_id = %s", (user_id,))
    for auth_provider, external_id in links:
        if not await link_external_id(conn, auth_provider, external_id, user_id):
            return False
    return True


async def providers_of_user(conn: AsyncConnection, user_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT auth_provider FROM user_external_ids WHERE user_id = %s", (user_id,)
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def insert_login(conn: AsyncConnection, login: SsoLogin, now_ms: int) -> None:
    await conn.execute("DELETE FROM sso_logins WHERE expires_ts <= %s", (now_ms,))
    await conn.execute(
        "INSERT INTO sso_logins (state, browser_hash, idp_id, nonce, code_verifier,"
        " redirect_url, uia_session, expires_ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            login.state,
            login.browser_hash,
            login.idp_id,
            login.nonce,
            login.code_verifier,
            login.redirect_url,
            login.uia_session,
            login.expires_ts,
        ),
    )


async def take_login(conn: AsyncConnection, state: str, now_ms: int) -> SsoLogin | None:
    """The unexpired login started with this state; it can be finished once."""
    cur = await conn.execute(
        "DELETE FROM sso_logins WHERE state = %s RETURNING state, browser_hash, idp_id, nonce,"
        " code_verifier, redirect_url, uia_session, expires_ts",
        (state,),
    )
    row = await cur.fetchone()
    if row is None or row[7] <= now_ms:
        return None
    return SsoLogin(row[0], bytes(row[1]), *row[2:])


async def insert_username_session(
    conn: AsyncConnection, session_hash: bytes, session: UsernameSession, now_ms: int
) -> None:
    await conn.execute("DELETE FROM sso_username_sessions WHERE expires_ts <= %s", (now_ms,))
    await conn.execute(
        "INSERT INTO sso_username_sessions (session_hash, idp_id, external_id, localpart,"
        " display_name, auth_session, redirect_url, expires_ts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            session_hash,
            session.idp_id,
            session.external_id,
            session.localpart,
            session.display_name,
            session.auth_session,
            session.redirect_url,
            session.expires_ts,
        ),
    )


async def get_username_session(
    conn: AsyncConnection, session_hash: bytes, now_ms: int
) -> UsernameSession | None:
    cur = await conn.execute(
        "SELECT idp_id, external_id, localpart, display_name, auth_session, redirect_url,"
        " expires_ts"
        " FROM sso_username_sessions WHERE session_hash = %s AND expires_ts > %s",
        (session_hash, now_ms),
    )
    row = await cur.fetchone()
    return UsernameSession(*row) if row else None


async def delete_username_session(conn: AsyncConnection, session_hash: bytes) -> bool:
    cur = await conn.execute(
        "DELETE FROM sso_username_sessions WHERE session_hash = %s", (session_hash,)
    )
    return cur.rowcount == 1
