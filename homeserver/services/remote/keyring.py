"""Other servers' signing keys: fetched, verified, cached; and our own key response.

Keys come from the server itself (`GET /_matrix/key/v2/server`) or, failing that, from the
configured notaries (`POST /_matrix/key/v2/query`). A response is used only when its
`server_name` is the server asked about and every key it lists has signed it; a notary's
answer must also carry the notary's signature. Verified keys live in a bounded in-memory
LRU in front of the `server_keys` table. The spec caps a key's usable lifetime at seven
days from when we fetched it, whatever `valid_until_ts` says.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeGuard

import orjson

from federation.keys import (
    ED25519,
    InvalidKey,
    KeyLookup,
    ServerKey,
    SigningKey,
    decode_verify_key,
    encode_verify_key,
    parse_key_id,
)
from federation.pdu_checks import InvalidPdu, signing_servers
from federation.room_versions import RoomVersion
from federation.signing import SignatureError, sign_json, signing_bytes, verify_bytes, verify_json
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.remote.client import FederationClient, FederationError
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import server_keys as key_store

log = logging.getLogger(__name__)

OWN_KEY_VALIDITY_MS = 24 * 3600 * 1000
MAX_KEY_LIFETIME_MS = 7 * 24 * 3600 * 1000
REFETCH_INTERVAL_MS = 30_000  # per server: unknown key ids must not make us hammer it
# Within that interval, a key id not yet asked for (a peer's rotated key) is fetched at
# once, but only for this many distinct ids: made-up ones cannot make us hammer it.
NEW_KEY_IDS_PER_INTERVAL = 4
MEMORY_CACHE_SIZE = 10_000
KEY_RESPONSE_MAX_BYTES = 512 * 1024
KEY_FETCH_TIMEOUT = 30.0
NOTARY_MAX_SERVERS = 100
NOTARY_MAX_KEY_IDS = 100
NOTARY_CONCURRENCY = 10


class KeyResponseError(ValueError):
    """A key response is malformed, for another server, or not properly signed."""


@dataclass(frozen=True, slots=True)
class OldKey:
    """One of our retired keys, still published so old signatures can be checked."""

    key_id: str
    verify_key: str  # unpadded base64
    expired_ts: int


def old_keys_from(configured: Mapping[str, object]) -> list[OldKey]:
    """Synapse's `old_signing_keys` shape (validated with the configuration) as OldKeys."""
    out = []
    for key_id, entry in configured.items():
        if isinstance(entry, dict):
            out.append(OldKey(key_id, str(entry["key"]), int(entry["expired_ts"])))
    return out


def verify_key_response(
    response: object, server_name: str, now: int
) -> tuple[list[key_store.StoredKey], int]:
    """Check a self-signed key response for `server_name`; its keys (with lifetimes capped
    at `now` + 7 days) and its own valid_until_ts. Raises KeyResponseError."""
    if not isinstance(response, dict):
        raise KeyResponseError("key response is not a JSON object")
    if response.get("server_name") != server_name:
        raise KeyResponseError(f"key response is for {response.get('server_name')!r}")
    valid_until = response.get("valid_until_ts")
    if not _is_timestamp(valid_until):
        raise KeyResponseError("valid_until_ts is missing or not a timestamp")
    verify_keys = response.get("verify_keys")
    old_keys = response.get("old_verify_keys", {})
    if not isinstance(verify_keys, dict) or not isinstance(old_keys, dict):
        raise KeyResponseError("verify_keys and old_verify_keys must be objects")
    signatures = response.get("signatures")
    own = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(own, dict):
        raise KeyResponseError("key response is not signed by its server")
    try:
        message = signing_bytes(response)
    except (ValueError, TypeError) as exc:
        raise KeyResponseError(f"key response cannot be encoded: {exc}") from None

    capped = min(valid_until, now + MAX_KEY_LIFETIME_MS)
    keys: list[key_store.StoredKey] = []
    for key_id, entry in verify_keys.items():
        verify_key = _decode_entry(key_id, entry)
        if verify_key is None:
            continue
        if not verify_bytes(message, own.get(key_id), decode_verify_key(verify_key)):
            raise KeyResponseError(f"key response is not signed with {key_id}")
        keys.append(key_store.StoredKey(key_id, verify_key, capped))
    if not keys:
        raise KeyResponseError("key response lists no usable ed25519 key")
    for key_id, entry in old_keys.items():
        verify_key = _decode_entry(key_id, entry)
        expired = entry.get("expired_ts") if isinstance(entry, dict) else None
        if verify_key is None or not _is_timestamp(expired) or key_id in verify_keys:
            continue
        keys.append(key_store.StoredKey(key_id, verify_key, min(expired, capped)))
    return keys, valid_until


def _is_timestamp(value: object) -> TypeGuard[int]:
    """A non-negative integer in canonical JSON's range (and so in a BIGINT column)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _decode_entry(key_id: object, entry: object) -> str | None:
    """The base64 key of a verify_keys entry when it is a well-formed ed25519 key."""
    if not isinstance(key_id, str) or not isinstance(entry, dict):
        return None
    key = entry.get("key")
    try:
        algorithm, _ = parse_key_id(key_id)
        if algorithm != ED25519 or not isinstance(key, str):
            return None
        decode_verify_key(key)
    except InvalidKey:
        return None
    return key


class KeyRing:
    """Verify keys of any server, ours included, for signature checks."""

    def __init__(
        self,
        db: Database,
        client: FederationClient,
        server_name: str,
        signing_key: SigningKey,
        *,
        trusted_key_servers: Collection[str] = (),
        old_keys: Collection[OldKey] = (),
    ) -> None:
        self.db = db
        self.client = client
        self.server_name = server_name
        self.signing_key = signing_key
        self.trusted_key_servers = tuple(trusted_key_servers)
        # A key still signing is current, whatever the list of retired ones says.
        self.old_keys = tuple(k for k in old_keys if k.key_id != signing_key.key_id)
        self._memory: OrderedDict[tuple[str, str], ServerKey] = OrderedDict()
        # Per server: when we last fetched its keys, and the key ids asked for since.
        self._last_fetch: OrderedDict[str, tuple[int, set[str]]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._notary_slots = asyncio.Semaphore(NOTARY_CONCURRENCY)

    # ---- our own keys

    def own_key_response(self) -> JsonDict:
        """Our `/_matrix/key/v2/server` body, signed."""
        body = {
            "server_name": self.server_name,
            "valid_until_ts": now_ms() + OWN_KEY_VALIDITY_MS,
            "verify_keys": {
                self.signing_key.key_id: {"key": encode_verify_key(self.signing_key.verify_key)}
            },
            "old_verify_keys": {
                old.key_id: {"key": old.verify_key, "expired_ts": old.expired_ts}
                for old in self.old_keys
            },
        }
        return sign_json(body, self.server_name, self.signing_key)

    def _own_keys(self) -> dict[str, ServerKey]:
        keys = {
            self.signing_key.key_id: ServerKey(
                self.signing_key.verify_key, now_ms() + OWN_KEY_VALIDITY_MS
            )
        }
        for old in self.old_keys:
            keys[old.key_id] = ServerKey(decode_verify_key(old.verify_key), old.expired_ts)
        return keys

    # ---- looking keys up

    async def verify_keys_for(
        self, server_name: str, key_ids: Collection[str], min_valid_ts: int
    ) -> dict[str, ServerKey]:
        """The keys among `key_ids` that we know or can fetch. A key valid until before
        `min_valid_ts` triggers a refetch; if that fails it is still returned, and the
        caller's validity check decides."""
        if server_name == self.server_name:
            own = self._own_keys()
            return {k: own[k] for k in key_ids if k in own}
        found = self._from_memory(server_name, key_ids)
        if _satisfied(found, key_ids, min_valid_ts):
            return found
        async with self.db.pool.connection() as conn:
            stored = await key_store.get_keys(conn, server_name, list(key_ids))
        for key_id, row in stored.items():
            self._remember(server_name, key_id, _server_key(row))
        found = self._from_memory(server_name, key_ids)
        if _satisfied(found, key_ids, min_valid_ts):
            return found
        await self._fetch(server_name, key_ids, min_valid_ts)
        return self._from_memory(server_name, key_ids)

    async def lookup(self, wanted: Mapping[str, Collection[str]], min_valid_ts: int) -> KeyLookup:
        """Fetch what `wanted` ({server: key ids}) names, then answer synchronously: the
        form `federation.signing` and `federation.pdu_checks` take."""
        results = await asyncio.gather(
            *(self.verify_keys_for(s, ids, min_valid_ts) for s, ids in wanted.items())
        )
        table = {
            (server, key_id): key
            for server, keys in zip(wanted, results, strict=True)
            for key_id, key in keys.items()
        }
        return lambda server, key_id: table.get((server, key_id))

    async def lookup_for_pdus(
        self, pdus: Iterable[JsonDict], room_version: RoomVersion
    ) -> KeyLookup:
        """A lookup that knows the keys every PDU's required signatures were made with."""
        wanted: dict[str, set[str]] = {}
        earliest: int | None = None
        for pdu in pdus:
            try:
                servers = signing_servers(pdu, room_version)
            except (InvalidPdu, AttributeError, TypeError):
                continue  # check_pdu will reject it
            signatures = pdu.get("signatures")
            for server in servers:
                sigs = signatures.get(server) if isinstance(signatures, dict) else None
                if isinstance(sigs, dict):
                    wanted.setdefault(server, set()).update(
                        k for k in sigs if isinstance(k, str) and k.startswith(ED25519 + ":")
                    )
            ts = pdu.get("origin_server_ts")
            if isinstance(ts, int) and (earliest is None or ts < earliest):
                earliest = ts
        min_valid = earliest if room_version.enforce_key_validity and earliest else 0
        return await self.lookup(wanted, min_valid)

    def _from_memory(self, server_name: str, key_ids: Iterable[str]) -> dict[str, ServerKey]:
        found = {}
        for key_id in key_ids:
            key = self._memory.get((server_name, key_id))
            if key is not None:
                self._memory.move_to_end((server_name, key_id))
                found[key_id] = key
        return found

    def _remember(self, server_name: str, key_id: str, key: ServerKey) -> None:
        current = self._memory.get((server_name, key_id))
        if current is None or current.valid_until_ts <= key.valid_until_ts:
            self._memory[(server_name, key_id)] = key
        self._memory.move_to_end((server_name, key_id))
        while len(self._memory) > MEMORY_CACHE_SIZE:
            self._memory.popitem(last=False)

    # ---- fetching

    async def _fetch(self, server_name: str, key_ids: Collection[str], min_valid_ts: int) -> None:
        """One fetch per server at a time, and not again within REFETCH_INTERVAL_MS
        unless for a key id not asked for yet (a few per interval)."""
        running = self._inflight.get(server_name)
        if running is not None:
            await asyncio.shield(running)
            return
        last = self._last_fetch.get(server_name)
        if last is not None and now_ms() - last[0] < REFETCH_INTERVAL_MS:
            new_ids = set(key_ids) - last[1]
            if not new_ids or len(last[1]) >= NEW_KEY_IDS_PER_INTERVAL:
                return
            last[1].update(new_ids)
        else:
            self._last_fetch[server_name] = (now_ms(), set(key_ids))
        self._last_fetch.move_to_end(server_name)
        while len(self._last_fetch) > MEMORY_CACHE_SIZE:
            self._last_fetch.popitem(last=False)
        task = asyncio.create_task(self._fetch_now(server_name, key_ids, min_valid_ts))
        self._inflight[server_name] = task
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._inflight.pop(server_name, None)
            else:
                task.add_done_callback(lambda _: self._inflight.pop(server_name, None))

    async def _fetch_now(self, server_name: str, key_ids: Collection[str], min_valid: int) -> None:
        try:
            await self.fetch_direct(server_name)
        except (FederationError, KeyResponseError) as exc:
            log.info("cannot fetch the keys of %s directly: %s", server_name, exc)
        for notary in self.trusted_key_servers:
            if _satisfied(self._from_memory(server_name, key_ids), key_ids, min_valid):
                return
            try:
                await self._fetch_from_notary(notary, server_name, key_ids, min_valid)
            except (FederationError, KeyResponseError, SignatureError) as exc:
                log.info("notary %s has no keys of %s for us: %s", notary, server_name, exc)

    async def fetch_direct(self, server_name: str) -> None:
        """Ask the server for its keys and store them; raises FederationError or
        KeyResponseError."""
        response = await self.client.get_json(
            server_name,
            "/_matrix/key/v2/server",
            signed=False,
            time_limit=KEY_FETCH_TIMEOUT,
            max_size=KEY_RESPONSE_MAX_BYTES,
        )
        await self._store(server_name, response)

    async def _fetch_from_notary(
        self, notary: str, server_name: str, key_ids: Collection[str], min_valid: int
    ) -> None:
        criteria = {key_id: {"minimum_valid_until_ts": min_valid} for key_id in key_ids}
        answer = await self.client.post_json(
            notary,
            "/_matrix/key/v2/query",
            {"server_keys": {server_name: criteria}},
            time_limit=KEY_FETCH_TIMEOUT,
            max_size=KEY_RESPONSE_MAX_BYTES,
        )
        responses = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            raise KeyResponseError(f"notary {notary} sent no server_keys list")
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            notary_sigs = response.get("signatures", {}).get(notary)
            notary_key_ids = list(notary_sigs) if isinstance(notary_sigs, dict) else []
            lookup = await self.lookup({notary: notary_key_ids}, now_ms())
            verify_json(response, notary, lookup, valid_at_ts=now_ms())
            await self._store(server_name, response)

    async def _store(self, server_name: str, response: object) -> None:
        now = now_ms()
        keys, valid_until = verify_key_response(response, server_name, now)
        async with self.db.pool.connection() as conn:
            await key_store.store_response(
                conn, server_name, orjson.dumps(response).decode(), valid_until, keys, now
            )
        for row in keys:
            self._remember(server_name, row.key_id, _server_key(row))

    # ---- the notary

    async def query(self, criteria: Mapping[str, tuple[Collection[str], int]]) -> list[JsonDict]:
        """Answer a notary query ({server: (key ids, minimum_valid_until_ts)}; no key ids
        means all keys): each server's newest key response, countersigned by us."""
        results = await asyncio.gather(
            *(self._notary_answer(server, *wanted) for server, wanted in criteria.items())
        )
        return [response for response in results if response is not None]

    async def _notary_answer(
        self, server_name: str, key_ids: Collection[str], min_valid: int
    ) -> JsonDict | None:
        if server_name == self.server_name:
            return self.own_key_response()
        stored = await self._stored_response(server_name)
        if stored is None or stored[1] < min_valid or not set(key_ids) <= _listed_keys(stored[0]):
            async with self._notary_slots:
                await self._fetch(server_name, key_ids, min_valid)
            stored = await self._stored_response(server_name)
        if stored is None:
            return None
        return sign_json(stored[0], self.server_name, self.signing_key)

    async def _stored_response(self, server_name: str) -> tuple[JsonDict, int] | None:
        async with self.db.pool.connection() as conn:
            row = await key_store.get_response(conn, server_name)
        if row is None:
            return None
        return orjson.loads(row[0]), row[1]


def _satisfied(found: Mapping[str, ServerKey], key_ids: Collection[str], min_valid: int) -> bool:
    return all(k in found and found[k].valid_until_ts >= min_valid for k in key_ids)


def _listed_keys(response: JsonDict) -> set[str]:
    return set(response.get("verify_keys", {})) | set(response.get("old_verify_keys", {}))


def _server_key(row: key_store.StoredKey) -> ServerKey:
    return ServerKey(decode_verify_key(row.verify_key), row.valid_until_ts)
