"""Searching users by id and display name among those a searcher may discover."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class DirectoryUserRow:
    user_id: str
    display_name: str | None
    avatar_url: str | None


# Users joined to a room the searcher is in, or to a room anyone may join or read.
_VISIBLE = r"""
    SELECT m.user_id, m.displayname, m.avatar_url
    FROM room_memberships m
    WHERE m.membership = 'join' AND m.room_id IN (
        SELECT room_id FROM room_memberships
        WHERE user_id = %(searcher)s AND membership = 'join'
        UNION
        SELECT cs.room_id FROM current_state cs JOIN events e ON e.event_id = cs.event_id
        WHERE cs.state_key = ''
          AND cs.type IN ('m.room.join_rules', 'm.room.history_visibility')
          AND e.json !~ '\\u(0000|[dD][89a-fA-F])'
          AND (e.json::jsonb -> 'content' ->> 'join_rule' = 'public'
               OR e.json::jsonb -> 'content' ->> 'history_visibility' = 'world_readable')
    )
"""
# Every active local user, when the server lets anyone find anyone.
_ALL_LOCAL = """
    UNION ALL
    SELECT user_id, NULL, NULL FROM users WHERE NOT deactivated AND NOT is_guest
"""

# Each word of the search term must start a word of the user id or the display name.
_SEARCH = """
WITH candidates AS (
    SELECT user_id, max(displayname) AS room_name, max(avatar_url) AS room_avatar
    FROM ({sources}) AS found (user_id, displayname, avatar_url)
    GROUP BY user_id
), named AS (
    SELECT c.user_id, coalesce(p.displayname, c.room_name) AS display_name,
        coalesce(p.avatar_url, c.room_avatar) AS avatar_url
    FROM candidates c LEFT JOIN profiles p ON p.user_id = c.user_id
)
SELECT user_id, display_name, avatar_url FROM named
WHERE NOT EXISTS (
    SELECT 1 FROM unnest(%(patterns)s::text[]) AS pattern
    WHERE NOT (lower(user_id) ~ pattern OR lower(coalesce(display_name, '')) ~ pattern)
)
ORDER BY (lower(coalesce(display_name, '')) LIKE %(prefix)s
          OR lower(user_id) LIKE '@' || %(prefix)s) DESC,
    lower(coalesce(display_name, user_id)), user_id
LIMIT %(limit)s
"""


async def search(
    conn: AsyncConnection,
    searcher: str,
    patterns: list[str],
    prefix: str,
    limit: int,
    *,
    all_local_users: bool,
) -> list[DirectoryUserRow]:
    """`patterns` are lower-case regular expressions that must all match; `prefix` a
    LIKE pattern ranking names that start with the whole term first."""
    sources = _VISIBLE + (_ALL_LOCAL if all_local_users else "")
    cur = await conn.execute(
        _SEARCH.format(sources=sources),
        {"searcher": searcher, "patterns": patterns, "prefix": prefix, "limit": limit},
    )
    return [DirectoryUserRow(*row) for row in await cur.fetchall()]
