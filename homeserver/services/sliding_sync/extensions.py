"""The extensions of a sliding sync answer: to-device messages, end-to-end
encryption state, account data, receipts and typing, each scoped to the rooms of
the lists and subscriptions the client names (all of them by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import invalid_param
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.e2ee.keys import E2EEKeys
from homeserver.services.ephemeral.receipts import ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import TypingService
from homeserver.services.push.rules import PUSH_RULES_TYPE, PushRuleService
from homeserver.services.sliding_sync.request import ExtensionRequest
from homeserver.services.sync.tokens import SyncToken
from homeserver.storage.accounts import account_data as account_data_store
from homeserver.storage.core.pool import Connection
from homeserver.storage.sliding_sync import rooms as store


@dataclass(frozen=True, slots=True)
class Scope:
    """The rooms of this answer's lists (by list) and subscriptions."""

    lists: Mapping[str, Sequence[str]]
    subscriptions: Sequence[str]
    initial: frozenset[str]  # rooms the connection is sent from nothing now
    timeline_ids: Mapping[str, set[str]]  # their timeline events

    def rooms(self, request: ExtensionRequest) -> list[str]:
        out: dict[str, None] = {}
        for name in request.lists:
            for key, room_ids in self.lists.items():
                if name in ("*", key):
                    out.update(dict.fromkeys(room_ids))
        for room_id in self.subscriptions:
            if "*" in request.rooms or room_id in request.rooms:
                out[room_id] = None
        return list(out)


class Extensions:
    def __init__(
        self,
        *,
        to_device: ToDeviceService,
        device_lists: DeviceLists,
        keys: E2EEKeys,
        receipts: ReceiptService,
        typing: TypingService,
        push_rules: PushRuleService,
    ) -> None:
        self.to_device = to_device
        self.device_lists = device_lists
        self.keys = keys
        self.receipts = receipts
        self.typing = typing
        self.push_rules = push_rules

    async def compute(
        self,
        conn: Connection,
        requester: Requester,
        requests: Mapping[str, ExtensionRequest],
        scope: Scope,
        since: SyncToken | None,
        now: SyncToken,
    ) -> tuple[JsonDict, bool]:
        """The `extensions` object, and whether it holds anything new."""
        out: JsonDict = {}
        news = False
        if requests["to_device"].enabled:
            out["to_device"] = await self._to_device(requester, requests["to_device"], now)
            news = news or bool(out["to_device"]["events"])
        if requests["e2ee"].enabled:
            out["e2ee"] = await self._e2ee(conn, requester, since, now)
            news = news or "device_lists" in out["e2ee"]
        user_id = requester.user_id
        if requests["account_data"].enabled:
            rooms = scope.rooms(requests["account_data"])
            out["account_data"] = await self._account_data(conn, user_id, rooms, scope, since, now)
            news = news or any(out["account_data"].values())
        if requests["receipts"].enabled:
            rooms = scope.rooms(requests["receipts"])
            out["receipts"] = {
                "rooms": await self._receipts(conn, user_id, rooms, scope, since, now)
            }
            news = news or bool(out["receipts"]["rooms"])
        if requests["typing"].enabled:
            rooms = scope.rooms(requests["typing"])
            out["typing"] = {"rooms": self._typing(rooms, scope, since, now)}
            news = news or bool(out["typing"]["rooms"])
        return out, news

    async def _to_device(
        self, requester: Requester, request: ExtensionRequest, now: SyncToken
    ) -> JsonDict:
        """Messages after `since`; those up to `since` the client has, so they go."""
        user_id, device_id = requester.user_id, requester.device_id
        since = 0
        if request.since is not None:
            try:
                since = int(request.since)
            except ValueError:
                raise invalid_param("extensions.to_device.since is not a position") from None
            await self.to_device.ack(user_id, device_id, since)
        if since >= now.to_device:
            # Nothing readable after `since`: not asked of the database.
            return {"next_batch": str(since), "events": []}
        limit = max(1, min(request.limit, 1000))
        events, reached = await self.to_device.messages_for(
            user_id, device_id, since, now.to_device, limit
        )
        return {"next_batch": str(max(reached, since)), "events": events}

    async def _e2ee(
        self, conn: Connection, requester: Requester, since: SyncToken | None, now: SyncToken
    ) -> JsonDict:
        user_id, device_id = requester.user_id, requester.device_id
        out: JsonDict = {
            "device_one_time_keys_count": await self.keys.one_time_key_counts(user_id, device_id),
            "device_unused_fallback_key_types": await self.keys.unused_fallback_key_types(
                user_id, device_id
            ),
        }
        if since is not None and now.device_lists > since.device_lists:
            changed, left = await self.device_lists.changes(
                conn, user_id, since.device_lists, now.device_lists
            )
            if changed or left:
                out["device_lists"] = {"changed": changed, "left": left}
        return out

    async def _account_data(
        self,
        conn: Connection,
        user_id: str,
        rooms: list[str],
        scope: Scope,
        since: SyncToken | None,
        now: SyncToken,
    ) -> JsonDict:
        """Global account data changed since `pos` (all of it at first); per room, all
        of it for rooms sent from nothing, else what changed."""
        start = 0 if since is None else since.account_data
        rows = []
        if since is None or now.account_data > start:
            rows = await account_data_store.account_data_since(
                conn, user_id, start, now.account_data
            )
        global_events = []
        room_events: dict[str, list[JsonDict]] = {}
        wanted = set(rooms)
        fresh = [r for r in rooms if r in scope.initial]
        for row in rows:
            if row.room_id is None:
                if row.type == PUSH_RULES_TYPE:
                    global_events.append(await self.push_rules.account_data_event(conn, user_id))
                else:
                    global_events.append({"type": row.type, "content": row.content})
            elif row.room_id in wanted and row.room_id not in scope.initial:
                room_events.setdefault(row.room_id, []).append(
                    {"type": row.type, "content": row.content}
                )
        if since is None and not any(e["type"] == PUSH_RULES_TYPE for e in global_events):
            global_events.insert(0, await self.push_rules.account_data_event(conn, user_id))
        room_events.update(await store.room_account_data(conn, user_id, fresh))
        return {"global": global_events, "rooms": room_events}

    async def _receipts(
        self,
        conn: Connection,
        user_id: str,
        rooms: list[str],
        scope: Scope,
        since: SyncToken | None,
        now: SyncToken,
    ) -> JsonDict:
        """For a room sent from nothing, the receipts on its timeline's events and the
        user's own (as Synapse); else the receipts since `pos`."""
        fresh = [r for r in rooms if since is None or r in scope.initial]
        others = [r for r in rooms if since is not None and r not in scope.initial]
        found = await self.receipts.receipts_for_rooms(conn, fresh, 0, now.receipts, user_id)
        for room_id, content in found.items():
            shown = scope.timeline_ids.get(room_id, set())
            found[room_id] = {
                event_id: kept
                for event_id, by_type in content.items()
                if (kept := _receipts_shown(by_type, event_id in shown, user_id))
            }
        found = {room_id: content for room_id, content in found.items() if content}
        if others and since is not None and now.receipts > since.receipts:
            found.update(
                await self.receipts.receipts_for_rooms(
                    conn, others, since.receipts, now.receipts, user_id
                )
            )
        return {room_id: {"type": "m.receipt", "content": c} for room_id, c in found.items()}

    def _typing(
        self, rooms: list[str], scope: Scope, since: SyncToken | None, now: SyncToken
    ) -> JsonDict:
        """Who is typing, in rooms where it changed since `pos` (or sent from nothing)."""
        start = 0 if since is None or since.typing > now.typing else since.typing
        changed = self.typing.rooms_changed_since(start) if now.typing > start else set()
        out: JsonDict = {}
        for room_id in rooms:
            users = self.typing.typing_in(room_id)
            fresh = since is None or room_id in scope.initial
            if room_id in changed or (fresh and users):
                out[room_id] = {"type": "m.typing", "content": {"user_ids": users}}
        return out


def _receipts_shown(
    by_type: Mapping[str, Mapping[str, Any]], on_timeline: bool, user_id: str
) -> dict[str, Any]:
    """All the receipts on an event of the timeline; elsewhere only the user's own."""
    if on_timeline:
        return dict(by_type)
    out: dict[str, Any] = {}
    for receipt_type, by_user in by_type.items():
        if user_id in by_user:
            out[receipt_type] = {user_id: by_user[user_id]}
    return out
