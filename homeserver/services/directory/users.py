"""The user directory: finding people by name among those the searcher may discover
(users sharing a room with them or in public rooms; every local user when
`user_directory.search_all_users` is on)."""

from __future__ import annotations

import re
from typing import Any

from homeserver.services.core.errors import ServiceError
from homeserver.storage.core.pool import Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.directory import users as store

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_TERM_LENGTH = 256


def _patterns(term: str) -> list[str]:
    """One regular expression per word: the word at the start of a word."""
    return [r"(^|[^[:alnum:]])" + re.escape(word) for word in term.split()]


def _like_prefix(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class UserDirectoryService:
    def __init__(self, db: Database, replicas: Replicas, search_all_users: bool) -> None:
        self.db = db
        self.replicas = replicas
        self.search_all_users = search_all_users

    async def search(self, searcher: str, term: object, limit: object) -> dict[str, Any]:
        if not isinstance(term, str):
            raise ServiceError(400, "M_BAD_JSON", "search_term must be a string")
        if limit is None:
            limit = DEFAULT_LIMIT
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ServiceError(400, "M_BAD_JSON", "limit must be a non-negative integer")
        term = term.replace("\x00", "").strip().lower()[:MAX_TERM_LENGTH]
        limit = min(limit, MAX_LIMIT)
        if not term or limit == 0:
            return {"results": [], "limited": False}
        # A second's staleness is fine for a search: a recent replica may answer.
        async with self.replicas.pool_for_recent().connection() as conn:
            rows = await store.search(
                conn,
                searcher,
                _patterns(term),
                _like_prefix(term),
                limit + 1,
                all_local_users=self.search_all_users,
            )
        results = [
            {
                "user_id": row.user_id,
                **({"display_name": row.display_name} if row.display_name is not None else {}),
                **({"avatar_url": row.avatar_url} if row.avatar_url is not None else {}),
            }
            for row in rows[:limit]
        ]
        return {"results": results, "limited": len(rows) > limit}
