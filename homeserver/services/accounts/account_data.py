"""Account data and room tags: per-user JSON that clients sync between devices.

Every change takes a position on the `account_data` stream and wakes the user's
syncs; sync reads changes with `storage.account_data.account_data_since`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import (
    ServiceError,
    bad_json,
    forbidden,
    invalid_param,
    not_found,
)
from homeserver.services.core.listeners import Listeners
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.accounts import account_data
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database

Write = Callable[[Connection, int], Awaitable[bool]]

# Types the server maintains itself; the spec forbids setting them through this API.
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})
IGNORED_USER_LIST = "m.ignored_user_list"
MAX_NAME_BYTES = 255  # event types, room ids and tag names
# Every sync of a new device carries all of it, so each item (an account data content,
# a tag's content) is bounded; the spec sets no figure, 1 MiB is generous for clients.
MAX_CONTENT_BYTES = 1024 * 1024


def check_owner(requester: Requester, user_id: str, what: str) -> None:
    """Account data, tags and filters are private: only their owner may touch them."""
    if requester.user_id != user_id:
        raise forbidden(f"Cannot access {what} of other users")


def _check_name(value: str, what: str) -> None:
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise invalid_param(f"{what} is longer than {MAX_NAME_BYTES} bytes")


def _check_size(content: Mapping[str, Any], what: str) -> None:
    ensure_storable(content)
    if len(orjson.dumps(content)) > MAX_CONTENT_BYTES:
        raise ServiceError(
            413, "M_TOO_LARGE", f"{what} is larger than {MAX_CONTENT_BYTES} bytes as JSON"
        )


def _room_key(room_id: str | None) -> str:
    """The storage key of global (None) or room account data."""
    if room_id is None:
        return account_data.GLOBAL
    if not room_id.startswith("!"):
        raise invalid_param(f"{room_id} is not a valid room ID")
    _check_name(room_id, "Room ID")
    return room_id


def _tags_of(content: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The tags of an m.tag content: {"tags": {name: {"order": number?}}}."""
    tags = content.get("tags", {})
    if not isinstance(tags, dict):
        raise bad_json("m.tag content needs a 'tags' object")
    for tag, tag_content in tags.items():
        _check_tag(tag, tag_content)
    return tags


def _check_tag(tag: str, content: Any) -> None:
    _check_name(tag, "Tag")
    if not isinstance(content, dict):
        raise bad_json(f"Tag {tag} must be a JSON object")
    order = content.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
        raise bad_json("Tag 'order' must be a number")


class AccountDataService:
    """Account data and room tags; every change moves the `account_data` stream."""

    def __init__(self, db: Database, allocator: StreamAllocator, notifier: Notifier) -> None:
        self.db = db
        self.streams = allocator
        self.notifier = notifier
        self._ignores_changed: Listeners[[str]] = Listeners()

    def add_ignores_listener(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call `listener(user_id)` once a change of the user's ignore list committed."""
        self._ignores_changed.add(listener)

    async def _write(self, user_id: str, write: Write) -> None:
        """Run `write(conn, position)` in one transaction at a new stream position, then
        wake the user's syncs if it changed anything."""
        positions: list[int] = []
        async with self.db.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await account_data.lock_user(conn, user_id)
                    positions = await self.streams.allocate(account_data.STREAM)
                    changed = await write(conn, positions[0])
                    await streams.finish(conn, account_data.STREAM, positions)
            except BaseException:
                # A position whose transaction did not commit must not hold readers back.
                await self.streams.abandon(account_data.STREAM, positions)
                raise
        if changed:
            await self.notifier.notify(account_data.STREAM, positions[0], users=[user_id])

    async def get_account_data(
        self, requester: Requester, user_id: str, room_id: str | None, type_: str
    ) -> dict[str, Any]:
        check_owner(requester, user_id, "account data")
        key = _room_key(room_id)
        async with self.db.pool.connection() as conn:
            content = await account_data.get_account_data(conn, user_id, key, type_)
        if content is None:
            raise not_found("Room account data not found" if room_id else "Account data not found")
        return content

    async def set_account_data(
        self,
        requester: Requester,
        user_id: str,
        room_id: str | None,
        type_: str,
        content: Mapping[str, Any],
    ) -> None:
        check_owner(requester, user_id, "account data")
        key = _room_key(room_id)
        _check_name(type_, "Account data type")
        if type_ in SERVER_MANAGED_TYPES:
            raise ServiceError(405, "M_BAD_JSON", f"Cannot set {type_} through this API")
        _check_size(content, "Account data")
        if room_id is not None and type_ == account_data.TAG_TYPE:
            # Keep room_tags, the source of the tag endpoints, in step with m.tag.
            tags = _tags_of(content)

            async def write(conn: Connection, position: int) -> bool:
                await account_data.replace_room_tags(conn, user_id, key, tags, position)
                return True
        else:

            async def write(conn: Connection, position: int) -> bool:
                await account_data.put_account_data(conn, user_id, key, type_, content, position)
                return True

        await self._write(user_id, write)
        if room_id is None and type_ == IGNORED_USER_LIST:
            await self._ignores_changed.notify(user_id)

    async def get_tags(
        self, requester: Requester, user_id: str, room_id: str
    ) -> dict[str, dict[str, Any]]:
        check_owner(requester, user_id, "tags")
        key = _room_key(room_id)
        async with self.db.pool.connection() as conn:
            return await account_data.get_room_tags(conn, user_id, key)

    async def set_tag(
        self,
        requester: Requester,
        user_id: str,
        room_id: str,
        tag: str,
        content: Mapping[str, Any],
    ) -> None:
        check_owner(requester, user_id, "tags")
        key = _room_key(room_id)
        _check_tag(tag, content)
        _check_size(content, "Tag content")

        async def write(conn: Connection, position: int) -> bool:
            await account_data.put_room_tag(conn, user_id, key, tag, content, position)
            return True

        await self._write(user_id, write)

    async def remove_tag(self, requester: Requester, user_id: str, room_id: str, tag: str) -> None:
        """Remove a tag if present (absent is not an error, as the spec has it)."""
        check_owner(requester, user_id, "tags")
        key = _room_key(room_id)
        _check_name(tag, "Tag")

        async def write(conn: Connection, position: int) -> bool:
            return await account_data.delete_room_tag(conn, user_id, key, tag, position)

        await self._write(user_id, write)
