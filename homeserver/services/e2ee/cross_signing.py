"""Cross-signing: a user's master, self-signing and user-signing keys, and the
signatures made with them (self-signing signs the user's own devices, user-signing
signs other users' master keys, devices sign their own user's master key).

The server checks every signature it is given against keys it already holds, so what
/keys/query serves is consistent: a client never has to sort forged signatures from
real ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from federation.signing import signing_bytes, verify_ed25519_signed
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, invalid_param
from homeserver.services.core.listeners import Listeners
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.storage.accounts import devices
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import cross_signing as store
from homeserver.storage.e2ee import keys as e2e_keys

MASTER = "master"
SELF_SIGNING = "self_signing"
USER_SIGNING = "user_signing"
# Request body field -> key type (the key's `usage`).
BODY_FIELDS = {
    "master_key": MASTER,
    "self_signing_key": SELF_SIGNING,
    "user_signing_key": USER_SIGNING,
}
KEY_TYPES = (MASTER, SELF_SIGNING, USER_SIGNING)
# How long an admin's `_allow_cross_signing_replacement_without_uia` lasts (Synapse's).
REPLACEMENT_WINDOW_MS = 10 * 60 * 1000


def same_signed_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two key objects are the same apart from their signatures."""
    try:
        return signing_bytes(a) == signing_bytes(b)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class CrossSigningKey:
    key_type: str
    key_id: str  # "ed25519:<public key>"
    public_key: str
    content: JsonDict


def parse_key(obj: object, user_id: str, key_type: str) -> CrossSigningKey:
    """Check the shape the spec gives a CrossSigningKey: the user's, with this usage, and
    exactly one ed25519 key named after itself."""
    if not isinstance(obj, dict):
        raise invalid_param(f"the {key_type} key must be an object")
    if obj.get("user_id") != user_id:
        raise invalid_param(f"the {key_type} key must belong to {user_id}")
    usage = obj.get("usage")
    if not isinstance(usage, list) or key_type not in usage:
        raise invalid_param(f"the {key_type} key's usage must include {key_type!r}")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise invalid_param(f"the {key_type} key must contain exactly one key")
    [(key_id, public_key)] = keys.items()
    if not isinstance(public_key, str) or key_id != f"ed25519:{public_key}":
        raise invalid_param(f"the {key_type} key must be an ed25519 key named ed25519:<key>")
    signatures = obj.get("signatures", {})
    if not isinstance(signatures, dict):
        raise invalid_param("signatures must be an object")
    try:
        signing_bytes(obj)
    except ValueError:
        raise invalid_param(f"the {key_type} key is not valid JSON for signing") from None
    return CrossSigningKey(key_type, key_id, public_key, obj)


def _loaded(rows: list[store.CrossSigningKeyRow]) -> dict[tuple[str, str], CrossSigningKey]:
    out: dict[tuple[str, str], CrossSigningKey] = {}
    for row in rows:
        content = orjson.loads(row.key_json)
        out[(row.user_id, row.key_type)] = CrossSigningKey(
            row.key_type, row.key_id, row.key_id.removeprefix("ed25519:"), content
        )
    return out


def merge_signatures(
    obj: JsonDict, key_id: str, owner: str, signatures: list[store.SignatureRow]
) -> JsonDict:
    """`obj` with the stored signatures on the key (`key_id` of `owner`) added."""
    extra = [s for s in signatures if s.target_user_id == owner and s.target_key_id == key_id]
    if not extra:
        return obj
    merged = {k: dict(v) for k, v in obj.get("signatures", {}).items() if isinstance(v, dict)}
    for sig in extra:
        merged.setdefault(sig.signer_user_id, {})[sig.signer_key_id] = sig.signature
    return {**obj, "signatures": merged}


_MISMATCH = "the signed key does not match the stored one"


class SignatureFailure(Exception):
    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class CrossSigningService:
    def __init__(self, db: Database, device_lists: DeviceLists) -> None:
        self.db = db
        self.device_lists = device_lists
        self._listeners: Listeners[[str, dict[str, JsonDict]]] = Listeners()

    def add_listener(self, listener: Callable[[str, dict[str, JsonDict]], Awaitable[None]]) -> None:
        """Told of a user's new master or self-signing keys (federation announces them)."""
        self._listeners.add(listener)

    async def _stored(self, conn: Connection, user_id: str) -> dict[str, CrossSigningKey]:
        found = _loaded(await store.get_keys(conn, [user_id], list(KEY_TYPES)))
        return {key_type: key for (_, key_type), key in found.items()}

    async def allow_replacement_without_uia(self, user_id: str) -> int:
        """Open the admin's window in which `user_id` may replace their cross-signing
        keys without re-authenticating (when they lost their password-less recovery,
        or an external identity provider vouched for them); returns when it ends."""
        until = now_ms() + REPLACEMENT_WINDOW_MS
        async with self.db.pool.connection() as conn:
            if not await store.open_master_replacement_window(conn, user_id, until):
                raise ServiceError(404, "M_NOT_FOUND", "User has no master cross-signing key")
        return until

    async def upload_needs_auth(self, user_id: str, body: Mapping[str, Any]) -> bool:
        """The spec's rule: re-authentication is needed unless the user has no master key
        yet, or the request only repeats the keys already stored. An admin's open
        replacement window waives it too."""
        ensure_storable(body, "The request")
        async with self.db.pool.connection() as conn:
            stored = await self._stored(conn, user_id)
            window = await store.master_replacement_window(conn, user_id)
        if MASTER not in stored or (window is not None and window > now_ms()):
            return False
        for field, key_type in BODY_FIELDS.items():
            if field not in body:
                continue
            current = stored.get(key_type)
            uploaded = body[field]
            if current is None or not isinstance(uploaded, dict):
                return True
            if not same_signed_content(current.content, uploaded):
                return True
        return False

    async def upload_keys(self, user_id: str, body: Mapping[str, Any]) -> None:
        """POST /keys/device_signing/upload, once authorised."""
        new = {
            key_type: parse_key(body[field], user_id, key_type)
            for field, key_type in BODY_FIELDS.items()
            if body.get(field) is not None
        }
        async with self.db.pool.connection() as conn:
            stored = await self._stored(conn, user_id)
            device_ids = set(await devices.all_device_ids(conn, user_id))
        master = new.get(MASTER) or stored.get(MASTER)
        if master is None:
            raise ServiceError(400, "M_MISSING_PARAM", "No master key is available")
        for key in new.values():
            if key.public_key in device_ids:
                raise ServiceError(403, "M_FORBIDDEN", "A key may not be named like a device")
            if key.key_type != MASTER and not verify_ed25519_signed(
                key.content, user_id, master.key_id, master.public_key
            ):
                raise ServiceError(
                    400,
                    "M_INVALID_SIGNATURE",
                    f"The {key.key_type} key is not signed by the master key",
                )
        changed = [
            key
            for key in new.values()
            if key.key_type not in stored
            or not same_signed_content(stored[key.key_type].content, key.content)
        ]
        if not changed:
            return
        async with self.device_lists.transaction([user_id]) as conn:
            for key in changed:
                old = stored.get(key.key_type)
                if old is not None and old.key_id != key.key_id:
                    await store.delete_signatures_by(conn, user_id, old.key_id)
                await store.set_key(
                    conn, user_id, key.key_type, key.key_id, orjson.dumps(key.content).decode()
                )
        public = {f"{k.key_type}_key": k.content for k in changed if k.key_type != USER_SIGNING}
        if public:
            await self._listeners.notify(user_id, public)

    async def upload_signatures(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        """POST /keys/signatures/upload: store the signatures that verify; the others are
        reported under `failures`, keyed by user and key id."""
        ensure_storable(body, "The request")
        failures: dict[str, dict[str, JsonDict]] = {}
        accepted: list[store.SignatureRow] = []
        async with self.db.pool.connection() as conn:
            mine = await self._stored(conn, user_id)
            for target_user, signed_keys in body.items():
                if not isinstance(signed_keys, dict):
                    failures.setdefault(target_user, {})[""] = {
                        "errcode": "M_INVALID_PARAM",
                        "error": "expected an object of signed keys",
                    }
                    continue
                for key_id, signed in signed_keys.items():
                    try:
                        accepted += await self._check_signature(
                            conn, user_id, mine, target_user, key_id, signed
                        )
                    except SignatureFailure as exc:
                        failures.setdefault(target_user, {})[key_id] = {
                            "errcode": exc.errcode,
                            "error": exc.message,
                        }
        if accepted:
            async with self.device_lists.transaction([user_id]) as conn:
                await store.add_signatures(conn, accepted)
        return {"failures": failures}

    async def _check_signature(
        self,
        conn: Connection,
        user_id: str,
        mine: dict[str, CrossSigningKey],
        target_user: str,
        key_id: str,
        signed: object,
    ) -> list[store.SignatureRow]:
        if not isinstance(signed, dict):
            raise SignatureFailure("M_INVALID_PARAM", "the signed key must be an object")
        signatures = signed.get("signatures")
        my_signatures = signatures.get(user_id) if isinstance(signatures, dict) else None
        if not isinstance(my_signatures, dict) or not my_signatures:
            raise SignatureFailure("M_MISSING_PARAM", f"no signature by {user_id}")
        if target_user == user_id:
            master = mine.get(MASTER)
            if master is not None and key_id == master.public_key:
                # A device vouching for its user's master key.
                return await self._device_signatures(conn, user_id, master, my_signatures, signed)
            stored_json = await e2e_keys.get_device_keys_json(conn, user_id, key_id)
            if stored_json is None:
                raise SignatureFailure("M_NOT_FOUND", f"{user_id} has no key {key_id}")
            signer = mine.get(SELF_SIGNING)
            target_content = orjson.loads(stored_json)
        else:
            others = _loaded(await store.get_keys(conn, [target_user], [MASTER]))
            target = others.get((target_user, MASTER))
            if target is None or key_id != target.public_key:
                raise SignatureFailure("M_NOT_FOUND", f"{target_user} has no master key {key_id}")
            signer = mine.get(USER_SIGNING)
            target_content = target.content
        if not same_signed_content(signed, target_content):
            raise SignatureFailure(
                "M_INVALID_PARAM", "the signed key does not match the stored one"
            )
        if signer is None or signer.key_id not in my_signatures:
            kind = "self-signing" if target_user == user_id else "user-signing"
            raise SignatureFailure("M_MISSING_PARAM", f"not signed with your {kind} key")
        if not verify_ed25519_signed(signed, user_id, signer.key_id, signer.public_key):
            raise SignatureFailure("M_INVALID_SIGNATURE", "the signature does not verify")
        return [
            store.SignatureRow(
                target_user, key_id, user_id, signer.key_id, my_signatures[signer.key_id]
            )
        ]

    async def _device_signatures(
        self,
        conn: Connection,
        user_id: str,
        master: CrossSigningKey,
        my_signatures: Mapping[str, Any],
        signed: JsonDict,
    ) -> list[store.SignatureRow]:
        if not same_signed_content(signed, master.content):
            raise SignatureFailure(
                "M_INVALID_PARAM", "the signed key does not match the stored one"
            )
        rows: list[store.SignatureRow] = []
        for signer_key_id, signature in my_signatures.items():
            if signer_key_id == master.key_id:
                continue  # the master key's own signature is part of what was uploaded
            device_id = signer_key_id.removeprefix("ed25519:")
            device_json = await e2e_keys.get_device_keys_json(conn, user_id, device_id)
            device_key = None
            if device_json is not None:
                device_key = orjson.loads(device_json).get("keys", {}).get(signer_key_id)
            if not isinstance(device_key, str):
                raise SignatureFailure("M_NOT_FOUND", f"no device key {signer_key_id}")
            if not verify_ed25519_signed(signed, user_id, signer_key_id, device_key):
                raise SignatureFailure("M_INVALID_SIGNATURE", "the signature does not verify")
            rows.append(
                store.SignatureRow(user_id, master.public_key, user_id, signer_key_id, signature)
            )
        if not rows:
            raise SignatureFailure("M_MISSING_PARAM", "no device signature on the master key")
        return rows

    async def keys_for_query(
        self, conn: Connection, viewer: str, user_ids: list[str]
    ) -> tuple[JsonDict, list[store.SignatureRow]]:
        """The cross-signing part of a /keys/query answer, and the signatures the viewer
        may see on these users' keys (for merging into their device keys too)."""
        rows = await store.get_keys(conn, user_ids, list(KEY_TYPES))
        signatures = await store.signatures_on(conn, user_ids, viewer)
        out: JsonDict = {"master_keys": {}, "self_signing_keys": {}, "user_signing_keys": {}}
        for (owner, key_type), key in _loaded(rows).items():
            if key_type == USER_SIGNING and owner != viewer:
                continue
            content = key.content
            if key_type == MASTER:
                content = merge_signatures(content, key.public_key, owner, signatures)
            out[f"{key_type}_keys"][owner] = content
        return out, signatures
