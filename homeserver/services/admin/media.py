"""Media moderation for admins, in Synapse's shapes: what a user uploaded, quarantine
(nobody is served quarantined media, not even its uploader), protection from it, and
deletion of local media and of the remote media cache. A file goes from the store
once no media row or thumbnail names its content any more."""

from __future__ import annotations

import contextlib
from typing import Any

from homeserver.services.admin.users import local_user_id
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import invalid_param, not_found
from homeserver.storage.admin import media as store
from homeserver.storage.core.pool import Database
from homeserver.storage.media.files import MediaFiles

ORDER_BY = frozenset(store.ORDER_COLUMNS)
MAX_PAGE = 1000


def render(row: store.AdminMediaRow) -> dict[str, Any]:
    return {
        "media_id": row.media_id,
        "media_type": row.content_type,
        "media_length": row.size,
        "upload_name": row.filename,
        "created_ts": row.created_ts,
        "last_access_ts": row.last_access_ts,
        "quarantined_by": row.quarantined_by,
        "safe_from_quarantine": row.safe_from_quarantine,
    }


def split_mxc(uri: str) -> tuple[str, str] | None:
    rest = uri.removeprefix("mxc://")
    origin, _, media_id = rest.partition("/")
    return (origin, media_id) if rest != uri and origin and media_id else None


class AdminMediaService:
    def __init__(self, db: Database, files: MediaFiles, server_name: str) -> None:
        self.db = db
        self.files = files
        self.server_name = server_name

    async def info(self, origin: str, media_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            row = await store.get(conn, origin, media_id)
        if row is None:
            raise not_found("Unknown media")
        return {
            "media_info": {
                **render(row),
                "media_origin": row.origin,
                "user_id": row.uploader,
                "filesystem_id": row.sha256,
                "url_cache": None,
                "authenticated": True,
            }
        }

    async def user_media(
        self, user_id: str, *, order_by: str, ascending: bool, offset: int, limit: int
    ) -> dict[str, Any]:
        local_user_id(user_id, self.server_name)
        async with self.db.pool.connection() as conn:
            rows, total = await store.of_user(
                conn,
                self.server_name,
                user_id,
                order_by=order_by,
                ascending=ascending,
                offset=offset,
                limit=min(limit, MAX_PAGE),
            )
        out: dict[str, Any] = {"media": [render(row) for row in rows], "total": total}
        if offset + len(rows) < total:
            out["next_token"] = offset + len(rows)
        return out

    async def room_media(self, room_id: str) -> dict[str, Any]:
        """The media the room's events point at: ours, and other servers'."""
        async with self.db.pool.connection() as conn:
            urls = await store.room_media_urls(conn, room_id)
        local = [u for u in urls if (k := split_mxc(u)) is not None and k[0] == self.server_name]
        return {"local": sorted(local), "remote": sorted(set(urls) - set(local))}

    async def quarantine(self, admin_id: str, origin: str, media_id: str, on: bool) -> None:
        async with self.db.pool.connection() as conn:
            await store.set_quarantined(conn, [(origin, media_id)], admin_id if on else None)

    async def quarantine_room(self, admin_id: str, room_id: str) -> int:
        async with self.db.pool.connection() as conn:
            urls = await store.room_media_urls(conn, room_id)
            keys = [key for url in urls if (key := split_mxc(url)) is not None]
            return await store.set_quarantined(conn, keys, admin_id)

    async def quarantine_user(self, admin_id: str, user_id: str) -> int:
        local_user_id(user_id, self.server_name)
        async with self.db.pool.connection() as conn:
            ids = await store.media_of_uploader(conn, self.server_name, user_id)
            return await store.set_quarantined(conn, [(self.server_name, i) for i in ids], admin_id)

    async def protect(self, media_id: str, safe: bool) -> None:
        async with self.db.pool.connection() as conn:
            if not await store.set_protected(conn, self.server_name, media_id, safe):
                raise not_found("Unknown media")

    async def _delete(self, keys: list[tuple[str, str]]) -> list[str]:
        async with self.db.pool.connection() as conn, conn.transaction():
            orphans = await store.delete(conn, keys)
        for sha256 in orphans:
            with contextlib.suppress(FileNotFoundError):
                self.files.path_of(sha256).unlink()
        return [media_id for _, media_id in keys]

    async def delete_one(self, origin: str, media_id: str) -> dict[str, Any]:
        if origin != self.server_name:
            raise invalid_param("Can only delete local media")
        async with self.db.pool.connection() as conn:
            if await store.get(conn, origin, media_id) is None:
                raise not_found("Unknown media")
        deleted = await self._delete([(origin, media_id)])
        return {"deleted_media": deleted, "total": len(deleted)}

    async def delete_older(
        self, *, before_ts: int, size_gt: int, keep_profiles: bool
    ) -> dict[str, Any]:
        if before_ts > now_ms():
            raise invalid_param("before_ts must be in the past")
        async with self.db.pool.connection() as conn:
            ids = await store.select_for_deletion(
                conn,
                self.server_name,
                before_ts=before_ts,
                size_gt=size_gt,
                keep_profiles=keep_profiles,
                local=True,
            )
        deleted = await self._delete([(self.server_name, i) for i in ids])
        return {"deleted_media": deleted, "total": len(deleted)}

    async def delete_user_media(self, user_id: str) -> dict[str, Any]:
        local_user_id(user_id, self.server_name)
        async with self.db.pool.connection() as conn:
            ids = await store.media_of_uploader(conn, self.server_name, user_id)
        deleted = await self._delete([(self.server_name, i) for i in ids])
        return {"deleted_media": deleted, "total": len(deleted)}

    async def purge_remote_cache(self, before_ts: int) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            keys = await store.remote_before(conn, self.server_name, before_ts)
        await self._delete(keys)
        return {"deleted": len(keys)}

    async def user_statistics(self, *, offset: int, limit: int) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            rows, total = await store.user_media_statistics(
                conn, self.server_name, offset=offset, limit=min(limit, MAX_PAGE)
            )
        users = [
            {"user_id": u, "displayname": name, "media_count": count, "media_length": size}
            for u, name, count, size in rows
        ]
        out: dict[str, Any] = {"users": users, "total": total}
        if offset + len(rows) < total:
            out["next_token"] = offset + len(rows)
        return out
