"""Server-side key backup: encrypted room keys a user's devices store for each other.

The server never sees the keys (session_data is opaque); it keeps versions apart,
refuses writes to a backup that is no longer the current one (a stale device must
not mix keys for an old backup key into a new backup), keeps the better copy of a
session, and gives each version an etag so clients notice new keys cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from federation.types import JsonDict
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.core.stored_json import ensure_storable
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import key_backup as store


def parse_version(text: str) -> int | None:
    """Versions are decimal numbers; anything else names no backup."""
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _version_info(row: store.BackupVersionRow, count: int) -> JsonDict:
    return {
        "algorithm": row.algorithm,
        "auth_data": orjson.loads(row.auth_data),
        "count": count,
        "etag": str(row.etag),
        "version": str(row.version),
    }


def _parse_session(room_id: str, session_id: str, data: object) -> store.SessionRow:
    """A KeyBackupData object, checked."""
    if not isinstance(data, dict):
        raise invalid_param(f"{room_id}/{session_id}: key data must be an object")
    first = data.get("first_message_index")
    forwarded = data.get("forwarded_count")
    verified = data.get("is_verified")
    session_data = data.get("session_data")
    for name, value in (("first_message_index", first), ("forwarded_count", forwarded)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
            raise invalid_param(f"{room_id}/{session_id}: {name} must be a non-negative integer")
    if not isinstance(verified, bool):
        raise invalid_param(f"{room_id}/{session_id}: is_verified must be a boolean")
    if not isinstance(session_data, dict):
        raise invalid_param(f"{room_id}/{session_id}: session_data must be an object")
    assert isinstance(first, int) and isinstance(forwarded, int)
    return store.SessionRow(
        room_id, session_id, first, forwarded, verified, orjson.dumps(session_data).decode()
    )


def _render_session(row: store.SessionRow) -> JsonDict:
    return {
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": orjson.loads(row.session_data),
    }


def _check_version_body(body: Mapping[str, Any]) -> tuple[str, str]:
    ensure_storable(body, "The request")
    algorithm = body.get("algorithm")
    auth_data = body.get("auth_data")
    if not isinstance(algorithm, str) or not algorithm:
        raise invalid_param("algorithm must be a string")
    if not isinstance(auth_data, dict):
        raise invalid_param("auth_data must be an object")
    return algorithm, orjson.dumps(auth_data).decode()


class KeyBackupService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_version(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        algorithm, auth_data = _check_version_body(body)
        async with self.db.pool.connection() as conn, conn.transaction():
            version = await store.create_version(conn, user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, user_id: str, version_text: str | None) -> JsonDict:
        """The named version, or the current one when `version_text` is None."""
        async with self.db.pool.connection() as conn:
            row = await self._find(conn, user_id, version_text)
            return _version_info(row, await store.count_keys(conn, user_id, row.version))

    async def update_version(
        self, user_id: str, version_text: str, body: Mapping[str, Any]
    ) -> None:
        algorithm, auth_data = _check_version_body(body)
        if "version" in body and body["version"] != version_text:
            raise invalid_param("version in the body does not match the path")
        async with self.db.pool.connection() as conn, conn.transaction():
            row = await self._find(conn, user_id, version_text, lock=True)
            if row.algorithm != algorithm:
                raise invalid_param("algorithm cannot change; create a new backup version")
            await store.set_auth_data(conn, user_id, row.version, auth_data)

    async def delete_version(self, user_id: str, version_text: str) -> None:
        """Deleting an already deleted version succeeds, as the spec asks."""
        version = parse_version(version_text)
        async with self.db.pool.connection() as conn, conn.transaction():
            if version is None or not await store.version_existed(conn, user_id, version):
                raise not_found("Unknown backup version")
            await store.delete_version(conn, user_id, version)

    async def _find(
        self, conn: Connection, user_id: str, version_text: str | None, *, lock: bool = False
    ) -> store.BackupVersionRow:
        if version_text is None:
            row = await store.latest_version(conn, user_id, lock=lock)
            if row is None:
                raise not_found("No current backup version")
            return row
        version = parse_version(version_text)
        found = (
            await store.get_version(conn, user_id, version, lock=lock)
            if version is not None
            else None
        )
        if found is None:
            raise not_found("Unknown backup version")
        return found

    async def put_keys(
        self,
        user_id: str,
        version_text: str,
        rooms: Mapping[str, Mapping[str, object]],
    ) -> JsonDict:
        """Store sessions ({room: {session: KeyBackupData}}) in the current version."""
        ensure_storable(rooms, "The request")
        sessions = [
            _parse_session(room_id, session_id, data)
            for room_id, by_session in rooms.items()
            for session_id, data in by_session.items()
        ]
        async with self.db.pool.connection() as conn, conn.transaction():
            current = await store.latest_version(conn, user_id, lock=True)
            if current is None:
                raise not_found("No backup version exists")
            if parse_version(version_text) != current.version:
                raise ServiceError(
                    403,
                    "M_WRONG_ROOM_KEYS_VERSION",
                    "This is not the current backup version",
                    current_version=str(current.version),
                )
            etag = current.etag
            if sessions and await store.put_sessions(conn, user_id, current.version, sessions):
                await store.bump_etag(conn, user_id, current.version)
                etag += 1
            count = await store.count_keys(conn, user_id, current.version)
        return {"etag": str(etag), "count": count}

    async def get_keys(
        self,
        user_id: str,
        version_text: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        ensure_storable([room_id, session_id], "The room or session id")
        async with self.db.pool.connection() as conn:
            row = await self._find(conn, user_id, version_text)
            sessions = await store.get_sessions(conn, user_id, row.version, room_id, session_id)
        if session_id is not None:
            if not sessions:
                raise not_found("No such session in the backup")
            return _render_session(sessions[0])
        rooms: dict[str, JsonDict] = {}
        for session in sessions:
            rooms.setdefault(session.room_id, {"sessions": {}})["sessions"][session.session_id] = (
                _render_session(session)
            )
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})
        return {"rooms": rooms}

    async def delete_keys(
        self,
        user_id: str,
        version_text: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        ensure_storable([room_id, session_id], "The room or session id")
        async with self.db.pool.connection() as conn, conn.transaction():
            row = await self._find(conn, user_id, version_text, lock=True)
            etag = row.etag
            if await store.delete_sessions(conn, user_id, row.version, room_id, session_id):
                await store.bump_etag(conn, user_id, row.version)
                etag += 1
            count = await store.count_keys(conn, user_id, row.version)
        return {"etag": str(etag), "count": count}
