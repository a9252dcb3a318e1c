"""Device lists over federation, both ways.

Out: when a local user's devices or keys change, the change is diffed against what we
last announced for each device (`device_list_outbound`) and every difference becomes an
m.device_list_update with a per-user stream id and the previous id, for the servers
sharing a room with the user. New master or self-signing keys go out as
m.signing_key_update. `GET /user/devices` serves the full list at the latest stream id.

In: the device lists of remote users who share a room with ours are cached
(`remote_device_lists`), filled from their server's `/user/devices`. An update whose
previous ids we have all seen applies to the cache; a gap (an update we missed) marks
the list stale and refetches it. Either way the local users sharing a room with the
remote user see them in their sync's `device_lists.changed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import orjson

from federation.identifiers import server_name_of
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.e2ee.cross_signing import (
    MASTER,
    SELF_SIGNING,
    CrossSigningService,
    merge_signatures,
    parse_key,
)
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.remote.client import FederationClient, FederationError, quote_segment
from homeserver.services.remote.sender import FederationSender
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import cross_signing as cross_signing_store
from homeserver.storage.e2ee import keys as e2e_keys
from homeserver.storage.remote import device_list_outbox as outbound
from homeserver.storage.remote import device_lists as remote
from homeserver.storage.remote import room_servers

log = logging.getLogger(__name__)


DEVICE_LIST_UPDATE = "m.device_list_update"
SIGNING_KEY_UPDATE = "m.signing_key_update"
MAX_REMOTE_DEVICES = 1000  # per remote user; beyond this a list is not cached
MAX_ID_LENGTH = 255
RESYNC_TIMEOUT_S = 30.0


def valid_id(value: object) -> bool:
    """A device or key id we can store: a short string without NUL."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value


def _digest(keys: JsonDict) -> str:
    return hashlib.sha256(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _checked_device_keys(keys: object, user_id: str, device_id: str) -> JsonDict | None:
    """A remote DeviceKeys object if it is for this device, else None."""
    if not isinstance(keys, dict):
        return None
    if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        return None
    if not isinstance(keys.get("keys"), dict):
        return None
    return keys


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


class RemoteDeviceLists:
    def __init__(
        self,
        db: Database,
        device_lists: DeviceLists,
        cross_signing: CrossSigningService,
        client: FederationClient,
        sender: FederationSender,
        server_name: str,
    ) -> None:
        self.db = db
        self.device_lists = device_lists
        self.cross_signing = cross_signing
        self.client = client
        self.sender = sender
        self.server_name = server_name
        self._resyncs: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        await cancel_and_wait(self._resyncs.values())

    # ---- outbound

    async def local_devices(self, conn: Connection, user_id: str) -> dict[str, JsonDict]:
        """The device keys a local user's devices publish to other servers (with the
        signatures the user made on them, without display names: Synapse's default of not
        showing device names to other servers protects users' privacy)."""
        rows = await e2e_keys.query_device_keys(conn, [user_id], None)
        signatures = await cross_signing_store.signatures_on(conn, [user_id], user_id)
        return {
            row.device_id: merge_signatures(
                orjson.loads(row.key_json), row.device_id, user_id, signatures
            )
            for row in rows
        }

    async def announce(self, user_ids: list[str]) -> None:
        """After a device-list transaction: tell the servers that share a room with each
        local user what changed. Failures are logged, not raised (the change itself is
        committed; remote servers resync on the next update)."""
        for user_id in user_ids:
            if server_name_of(user_id, "@") != self.server_name:
                continue
            try:
                edus, destinations = await self._diff(user_id)
                for destination in destinations:
                    for edu in edus:
                        await self.sender.send_edu(destination, DEVICE_LIST_UPDATE, edu)
            except Exception:
                log.exception("cannot announce the device list of %s", user_id)

    async def _diff(self, user_id: str) -> tuple[list[JsonDict], list[str]]:
        async with self.db.pool.connection() as conn, conn.transaction():
            await outbound.lock_user(conn, user_id)
            current = await self.local_devices(conn, user_id)
            announced = await outbound.announced(conn, user_id)
            stream_id = max((sid for sid, _ in announced.values()), default=0)
            edus: list[JsonDict] = []
            for device_id, keys in sorted(current.items()):
                digest = _digest(keys)
                if device_id in announced and announced[device_id][1] == digest:
                    continue
                stream_id += 1
                edus.append(self._edu(user_id, device_id, stream_id, keys=keys))
                await outbound.record(conn, user_id, device_id, stream_id, digest)
            for device_id, (_, last_digest) in sorted(announced.items()):
                if device_id not in current and last_digest is not None:
                    stream_id += 1
                    edus.append(self._edu(user_id, device_id, stream_id, deleted=True))
                    await outbound.record(conn, user_id, device_id, stream_id, None)
            destinations = await room_servers.servers_sharing_room(conn, user_id) if edus else []
        return edus, destinations

    @staticmethod
    def _edu(
        user_id: str,
        device_id: str,
        stream_id: int,
        *,
        keys: JsonDict | None = None,
        deleted: bool = False,
    ) -> JsonDict:
        edu: JsonDict = {
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": [stream_id - 1] if stream_id > 1 else [],
            "deleted": deleted,
        }
        if keys is not None:
            edu["keys"] = keys
        return edu

    async def announce_signing_keys(self, user_id: str, keys: dict[str, JsonDict]) -> None:
        """New master / self-signing keys of a local user, to the servers sharing a room."""
        try:
            async with self.db.pool.connection() as conn:
                destinations = await room_servers.servers_sharing_room(conn, user_id)
            for destination in destinations:
                await self.sender.send_edu(
                    destination, SIGNING_KEY_UPDATE, {"user_id": user_id, **keys}
                )
        except Exception:
            log.exception("cannot announce the cross-signing keys of %s", user_id)

    async def user_devices(self, user_id: str) -> JsonDict:
        """GET /_matrix/federation/v1/user/devices/{userId} for a local user."""
        async with self.db.pool.connection() as conn:
            devices = await self.local_devices(conn, user_id)
            stream_id = await outbound.latest_stream_id(conn, user_id)
            cross, _ = await self.cross_signing.keys_for_query(conn, "", [user_id])
        out: JsonDict = {
            "user_id": user_id,
            "stream_id": stream_id,
            "devices": [{"device_id": d, "keys": k} for d, k in sorted(devices.items())],
        }
        for key_type in (MASTER, SELF_SIGNING):
            key = cross[f"{key_type}_keys"].get(user_id)
            if key is not None:
                out[f"{key_type}_key"] = key
        return out

    # ---- inbound

    async def on_device_list_update(self, origin: str, content: Any) -> None:
        """An m.device_list_update from `origin` (dropped unless about one of its users)."""
        if not isinstance(content, dict):
            return
        user_id, device_id = content.get("user_id"), content.get("device_id")
        stream_id = _int(content.get("stream_id"))
        prev_ids = content.get("prev_id", [])
        if (
            server_name_of(user_id, "@") != origin
            or not isinstance(user_id, str)
            or not valid_id(device_id)
            or stream_id is None
            or not isinstance(prev_ids, list)
        ):
            return
        assert isinstance(device_id, str)
        prev = [_int(p) for p in prev_ids]
        deleted = content.get("deleted") is True
        keys = _checked_device_keys(content.get("keys"), user_id, device_id)
        if not await self._tracked(user_id):
            return
        resync = False
        async with self.device_lists.transaction([user_id]) as conn:
            header = await remote.lock_list(conn, user_id)
            if header is None or header.stream_id >= stream_id:
                pass  # not cached (a query fetches it), or nothing new
            elif header.stale or any(p is None or p > header.stream_id for p in prev):
                await remote.mark_stale(conn, user_id)
                resync = True
            elif deleted or keys is not None:
                device = remote.RemoteDevice(
                    user_id, device_id, orjson.dumps(keys).decode() if keys else None, None
                )
                await remote.apply_device_update(conn, device, deleted, stream_id, now_ms())
            else:
                await remote.mark_stale(conn, user_id)  # an update without its keys
                resync = True
        if resync:
            self._start_resync(origin, user_id)

    async def on_signing_key_update(self, origin: str, content: Any) -> None:
        """An m.signing_key_update from `origin`: cache the keys it carries."""
        if not isinstance(content, dict):
            return
        user_id = content.get("user_id")
        if server_name_of(user_id, "@") != origin or not isinstance(user_id, str):
            return
        new: dict[str, str] = {}
        for key_type in (MASTER, SELF_SIGNING):
            obj = content.get(f"{key_type}_key")
            if obj is None:
                continue
            try:
                parse_key(obj, user_id, key_type)
            except ServiceError:
                return
            new[key_type] = orjson.dumps(obj).decode()
        if not new or not await self._tracked(user_id):
            return
        async with self.device_lists.transaction([user_id]) as conn:
            if await remote.lock_list(conn, user_id) is not None:
                for key_type, key_json in new.items():
                    await remote.set_cross_signing_key(conn, user_id, key_type, key_json)

    async def _tracked(self, user_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            return bool(await room_servers.tracked_by_us(conn, [user_id], self.server_name))

    def _start_resync(self, server: str, user_id: str) -> None:
        if user_id in self._resyncs:
            return
        task = asyncio.create_task(self._background_resync(server, user_id))
        self._resyncs[user_id] = task
        task.add_done_callback(lambda _: self._resyncs.pop(user_id, None))

    async def _background_resync(self, server: str, user_id: str) -> None:
        try:
            await self.resync(server, user_id, RESYNC_TIMEOUT_S)
        except FederationError as exc:
            log.info("cannot resync the device list of %s: %s", user_id, exc)

    async def resync(self, server: str, user_id: str, timeout_s: float) -> None:
        """Fetch a remote user's whole device list and cache it. Raises FederationError
        (also for an answer we cannot use)."""
        answer = await self.client.get_json(
            server,
            f"/_matrix/federation/v1/user/devices/{quote_segment(user_id)}",
            time_limit=timeout_s,
        )
        stream_id = _int(answer.get("stream_id")) if isinstance(answer, dict) else None
        listed = answer.get("devices") if isinstance(answer, dict) else None
        if stream_id is None or not isinstance(listed, list) or len(listed) > MAX_REMOTE_DEVICES:
            raise FederationError(server, "unusable /user/devices answer")
        assert isinstance(answer, dict)
        devices: list[remote.RemoteDevice] = []
        for item in listed:
            device_id = item.get("device_id") if isinstance(item, dict) else None
            if not valid_id(device_id):
                continue
            assert isinstance(item, dict) and isinstance(device_id, str)
            keys = _checked_device_keys(item.get("keys"), user_id, device_id)
            if keys is not None:
                devices.append(
                    remote.RemoteDevice(user_id, device_id, orjson.dumps(keys).decode(), None)
                )
        cross: dict[str, str] = {}
        for key_type in (MASTER, SELF_SIGNING):
            obj = answer.get(f"{key_type}_key")
            try:
                if obj is not None:
                    parse_key(obj, user_id, key_type)
                    cross[key_type] = orjson.dumps(obj).decode()
            except ServiceError:
                continue
        async with self.device_lists.transaction([user_id]) as conn:
            await remote.lock_list(conn, user_id)
            await remote.replace_list(conn, user_id, stream_id, devices, cross, now_ms())

    async def cached_keys(self, user_ids: list[str]) -> tuple[set[str], JsonDict]:
        """From the cache: the users whose lists are cached, fresh and still kept up to date
        by their servers, and a /keys/query answer part for them."""
        async with self.db.pool.connection() as conn:
            tracked = await room_servers.tracked_by_us(conn, user_ids, self.server_name)
            headers = await remote.get_lists(conn, sorted(tracked))
            fresh = sorted(u for u, h in headers.items() if not h.stale)
            devices = await remote.get_devices(conn, fresh)
            cross = await remote.get_cross_signing_keys(conn, fresh)
        out: JsonDict = {
            "device_keys": {u: {} for u in fresh},
            "master_keys": {},
            "self_signing_keys": {},
        }
        for device in devices:
            if device.keys_json is not None:
                out["device_keys"][device.user_id][device.device_id] = orjson.loads(
                    device.keys_json
                )
        for user_id, key_type, key_json in cross:
            out[f"{key_type}_keys"][user_id] = orjson.loads(key_json)
        return set(fresh), out
