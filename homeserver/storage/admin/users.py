"""Reads and writes on accounts that only server admins make: listing every account
with its profile, and flags (admin, deactivated) set from outside the account."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, sql


@dataclass(frozen=True, slots=True)
class AdminUserRow:
    user_id: str
    is_guest: bool
    is_admin: bool
    deactivated: bool
    erased: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None
    last_seen_ts: int | None
    shadow_banned: bool
    suspended: bool
    locked: bool


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Which accounts a listing shows; None means "no condition"."""

    name: str | None = None  # substring of the localpart or the display name
    user_id: str | None = None  # substring of the full user id
    include_guests: bool = True
    include_deactivated: bool = False
    admins: bool | None = None
    deactivated: bool | None = None  # (v3) only these, when set


# Columns a listing may be ordered by, by the name admin tools use for them.
ORDER_COLUMNS: dict[str, str] = {
    "name": "u.user_id",
    "is_guest": "u.is_guest",
    "admin": "u.is_admin",
    "deactivated": "u.deactivated",
    "displayname": "p.displayname",
    "avatar_url": "p.avatar_url",
    "creation_ts": "u.created_ts",
    "last_seen_ts": "seen.last_seen_ts",
    # Columns we have no data for sort like the user id, not as an error.
    "user_type": "u.user_id",
    "shadow_banned": "u.shadow_banned",
    "locked": "u.locked",
}

_SELECT = (
    "SELECT u.user_id, u.is_guest, u.is_admin, u.deactivated, u.erased, u.created_ts,"
    " p.displayname, p.avatar_url, seen.last_seen_ts, u.shadow_banned, u.suspended, u.locked"
    " FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
    " LEFT JOIN LATERAL (SELECT max(d.last_seen_ts) AS last_seen_ts FROM devices d"
    " WHERE d.user_id = u.user_id) seen ON TRUE"
)


def _like(term: str) -> str:
    """A LIKE pattern matching `term` anywhere, its own wildcards taken literally."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(user_filter: UserFilter) -> tuple[sql.Composable, dict[str, object]]:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, object] = {}
    if user_filter.name is not None:
        clauses.append(
            sql.SQL(
                "(split_part(substr(u.user_id, 2), ':', 1) ILIKE %(name)s"
                " OR p.displayname ILIKE %(name)s)"
            )
        )
        params["name"] = _like(user_filter.name)
    elif user_filter.user_id is not None:
        clauses.append(sql.SQL("u.user_id ILIKE %(user_id)s"))
        params["user_id"] = _like(user_filter.user_id)
    if not user_filter.include_guests:
        clauses.append(sql.SQL("NOT u.is_guest"))
    if not user_filter.include_deactivated:
        clauses.append(sql.SQL("NOT u.deactivated"))
    if user_filter.deactivated is not None:
        clauses.append(sql.SQL("u.deactivated = %(deactivated)s"))
        params["deactivated"] = user_filter.deactivated
    if user_filter.admins is not None:
        clauses.append(sql.SQL("u.is_admin = %(admins)s"))
        params["admins"] = user_filter.admins
    return sql.SQL(" AND ").join(clauses), params


async def list_users(
    conn: AsyncConnection,
    user_filter: UserFilter,
    *,
    order_by: str,
    ascending: bool,
    offset: int,
    limit: int,
) -> tuple[list[AdminUserRow], int]:
    """One page of accounts and how many match in all; `order_by` is a key of
    ORDER_COLUMNS (the caller checks), ties broken by user id."""
    where, params = _where(user_filter)
    direction = sql.SQL("ASC" if ascending else "DESC")
    query = sql.SQL(
        _SELECT + " WHERE {where} ORDER BY {column} {direction} NULLS LAST, u.user_id {direction}"
        " LIMIT %(limit)s OFFSET %(offset)s"
    ).format(where=where, column=sql.SQL(ORDER_COLUMNS[order_by]), direction=direction)
    cur = await conn.execute(query, {**params, "limit": limit, "offset": offset})
    rows = [AdminUserRow(*row) for row in await cur.fetchall()]
    count = await conn.execute(
        sql.SQL(
            "SELECT count(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
            " WHERE {where}"
        ).format(where=where),
        params,
    )
    total = await count.fetchone()
    return rows, int(total[0]) if total else 0


async def get_user(conn: AsyncConnection, user_id: str) -> AdminUserRow | None:
    cur = await conn.execute(_SELECT + " WHERE u.user_id = %s", (user_id,))
    row = await cur.fetchone()
    return AdminUserRow(*row) if row else None


async def set_admin(conn: AsyncConnection, user_id: str, is_admin: bool) -> None:
    await conn.execute("UPDATE users SET is_admin = %s WHERE user_id = %s", (is_admin, user_id))


async def reactivate(conn: AsyncConnection, user_id: str) -> None:
    """Open a deactivated account again (the caller sets a new password)."""
    await conn.execute(
        "UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = %s", (user_id,)
    )
