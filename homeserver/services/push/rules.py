"""Push rules: each user's rules merged with the server-default ones, the
/pushrules API, and the `m.push_rules` account data that sync delivers.

A user's stored rows (their own rules, and enabled/actions changes to default
rules) are merged with `push_defaults` when read, so an improved default reaches
every user who did not change it. Every change is written in one transaction that
also puts the merged rules at a new position of the account data stream: the
user's syncs wake and deliver `m.push_rules`. Compiled rules are cached per user
for the send path; a change evicts them here and, by broadcast, in the other
worker processes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from federation.types import JsonDict
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.push.defaults import default_rules, localpart_of
from homeserver.services.push.evaluator import KINDS, CompiledRules, SharedRules
from homeserver.storage.accounts import account_data
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.push import rules as store

PUSH_RULES_TYPE = "m.push_rules"
SCOPE = "global"
CACHED_USERS = 20_000
BROADCAST_KIND = "push_rules"
SIMPLE_ACTIONS = frozenset({"notify", "dont_notify", "coalesce"})
MAX_RULE_ID_BYTES = 255
CACHED_RULE_SETS = 1_000
# Who shared rules are compiled for: no real user id contains NUL, nor can a stored
# rule (PostgreSQL text refuses it), so a condition naming it names the user.
PLACEHOLDER_USER = "@\x00user:\x00"

Fingerprint = tuple[tuple[Any, ...], ...]


def _missing(message: str) -> ServiceError:
    return ServiceError(400, "M_MISSING_PARAM", message)


def _bad_rule(message: str) -> ServiceError:
    """The spec's answer to a rule id or position it cannot accept (400 M_UNKNOWN)."""
    return ServiceError(400, "M_UNKNOWN", message)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise invalid_param(f"Unknown push rule kind {kind!r}; expected one of {', '.join(KINDS)}")


def check_actions(actions: Any) -> list[Any]:
    """Actions are strings the spec knows, or `set_tweak` objects."""
    if not isinstance(actions, list):
        raise invalid_param("'actions' must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in SIMPLE_ACTIONS:
                raise invalid_param(f"Unknown action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise invalid_param("An action object needs a string 'set_tweak'")
        else:
            raise invalid_param("Each action must be a string or an object")
    return actions


def _check_conditions(conditions: Any) -> list[Any]:
    if not isinstance(conditions, list):
        raise invalid_param("'conditions' must be a list")
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise invalid_param("Each condition must be an object with a string 'kind'")
    return conditions


def _user_rule(row: store.PushRuleRow) -> JsonDict:
    """A stored user rule in the shape clients see."""
    rule: JsonDict = {
        "rule_id": row.rule_id,
        "default": False,
        "enabled": row.enabled is not False,
        "actions": row.actions or [],
    }
    if row.kind in ("override", "underride"):
        rule["conditions"] = row.conditions or []
    elif row.kind == "content":
        rule["pattern"] = row.pattern or ""
    return rule


def merge(user_id: str, rows: Sequence[store.PushRuleRow]) -> dict[str, list[JsonDict]]:
    """The user's whole ruleset: the master rule, then per kind the user's rules (rows
    come most important first) before the server defaults, with their changes."""
    defaults = default_rules(user_id)
    changes = {(r.kind, r.rule_id): r for r in rows if r.is_default}
    ruleset: dict[str, list[JsonDict]] = {}
    for kind in KINDS:
        own = [_user_rule(r) for r in rows if r.kind == kind and not r.is_default]
        base: list[JsonDict] = []
        for rule in defaults[kind]:
            change = changes.get((kind, rule["rule_id"]))
            if change is not None:
                rule = dict(rule)
                if change.enabled is not None:
                    rule["enabled"] = change.enabled
                if change.actions is not None:
                    rule["actions"] = change.actions
            base.append(rule)
        if kind == "override":
            ruleset[kind] = base[:1] + own + base[1:]
        else:
            ruleset[kind] = own + base
    return ruleset


def _renamed(value: Any, old: str, new: str) -> Any:
    return new if value == old else value


def room_rule_copies(
    rows: Sequence[store.PushRuleRow], old_room_id: str, new_room_id: str
) -> list[tuple[store.PushRuleRow, store.PushRuleRow]]:
    """(rule, its copy for the new room) for the user rules that name the old room, by
    their id or a condition's pattern or value; none whose copy exists already."""
    taken = {(r.kind, r.rule_id) for r in rows}
    out: list[tuple[store.PushRuleRow, store.PushRuleRow]] = []
    for row in rows:
        conditions = [c for c in row.conditions or [] if isinstance(c, dict)]
        named = any(old_room_id in (c.get("pattern"), c.get("value")) for c in conditions)
        if row.rule_id != old_room_id and not named:
            continue
        if old_room_id in row.rule_id:
            rule_id = row.rule_id.replace(old_room_id, new_room_id)
        else:
            rule_id = f"{row.rule_id}.{new_room_id}"
        if (row.kind, rule_id) in taken or len(rule_id.encode()) > MAX_RULE_ID_BYTES:
            continue
        copied = [
            {
                **c,
                **{
                    k: _renamed(c[k], old_room_id, new_room_id)
                    for k in ("pattern", "value")
                    if k in c
                },
            }
            for c in conditions
        ]
        copy = replace(row, rule_id=rule_id, conditions=copied if row.conditions else None)
        out.append((row, copy))
    return out


def fingerprint(rows: Sequence[store.PushRuleRow]) -> Fingerprint:
    """What makes a user's ruleset theirs, their id aside: their stored rows. Users
    with equal fingerprints have rulesets that differ only where the server defaults
    name the user (id, localpart), so one `SharedRules` serves them all."""
    return tuple(
        (
            r.kind,
            r.rule_id,
            r.is_default,
            r.priority,
            orjson.dumps(r.conditions, option=orjson.OPT_SORT_KEYS),
            r.pattern,
            orjson.dumps(r.actions, option=orjson.OPT_SORT_KEYS),
            r.enabled,
        )
        for r in rows
    )


def shared_rules(rows: Sequence[store.PushRuleRow]) -> SharedRules:
    """The rules of every user whose stored rows are these (user ids aside)."""
    ruleset = merge(PLACEHOLDER_USER, rows)
    return SharedRules(ruleset, PLACEHOLDER_USER, localpart_of(PLACEHOLDER_USER))


class _Entry:
    """A user's merged ruleset, compiled, and the shared rules of their group."""

    __slots__ = ("compiled", "ruleset", "shared")

    def __init__(
        self, ruleset: dict[str, list[JsonDict]], compiled: CompiledRules, shared: SharedRules
    ) -> None:
        self.ruleset = ruleset
        self.compiled = compiled
        self.shared = shared


class PushRuleService:
    """`hs.push_rules`."""

    def __init__(self, db: Database, allocator: StreamAllocator, notifier: Notifier) -> None:
        self.db = db
        self.allocator = allocator
        self.notifier = notifier
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Shared rules by fingerprint: immutable, so never stale (only evicted).
        self._shared: OrderedDict[Fingerprint, SharedRules] = OrderedDict()
        # Moves on at every change of anyone's rules: what callers that keep groups of
        # users (a room's members) compare to know theirs still hold.
        self.generation = 0
        notifier.on(BROADCAST_KIND, self._on_broadcast)

    async def _on_broadcast(self, payload: Mapping[str, Any]) -> None:
        user_id = payload.get("user_id")
        if isinstance(user_id, str):
            self._cache.pop(user_id, None)
            self.generation += 1

    # -- reading -----------------------------------------------------------------------

    async def compiled(self, conn: Connection, user_ids: Sequence[str]) -> dict[str, CompiledRules]:
        """Compiled rules of these users, from the cache where possible (one query for
        the others): what the send path evaluates events with."""
        return {u: entry.compiled for u, entry in (await self._entries(conn, user_ids)).items()}

    async def shared(
        self, conn: Connection, user_ids: Sequence[str]
    ) -> list[tuple[SharedRules, list[str]]]:
        """The users grouped by the shared rules they are evaluated with (the send
        path): usually one group, the users who kept the server defaults."""
        groups: dict[int, tuple[SharedRules, list[str]]] = {}
        for user_id, entry in (await self._entries(conn, user_ids)).items():
            group = groups.get(id(entry.shared))
            if group is None:
                groups[id(entry.shared)] = (entry.shared, [user_id])
            else:
                group[1].append(user_id)
        return list(groups.values())

    def _shared_rules(self, rows: Sequence[store.PushRuleRow]) -> SharedRules:
        key = fingerprint(rows)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = shared_rules(rows)
            while len(self._shared) > CACHED_RULE_SETS:
                self._shared.popitem(last=False)
        else:
            self._shared.move_to_end(key)
        return found

    async def _entries(self, conn: Connection, user_ids: Sequence[str]) -> dict[str, _Entry]:
        found: dict[str, _Entry] = {}
        missing: list[str] = []
        for user_id in user_ids:
            entry = self._cache.get(user_id)
            if entry is None:
                missing.append(user_id)
            else:
                self._cache.move_to_end(user_id)
                found[user_id] = entry
        if missing:
            rows = await store.rules_of_users(conn, missing)
            by_user: dict[str, list[store.PushRuleRow]] = {u: [] for u in missing}
            for row in rows:
                by_user[row.user_id].append(row)
            for user_id in missing:
                own = by_user[user_id]
                ruleset = merge(user_id, own)
                entry = _Entry(ruleset, CompiledRules(ruleset), self._shared_rules(own))
                found[user_id] = entry
                self._cache[user_id] = entry
            while len(self._cache) > CACHED_USERS:
                self._cache.popitem(last=False)
        return found

    async def ruleset(self, conn: Connection, user_id: str) -> dict[str, list[JsonDict]]:
        return (await self._entries(conn, [user_id]))[user_id].ruleset

    async def get_all(self, user_id: str) -> dict[str, list[JsonDict]]:
        async with self.db.pool.connection() as conn:
            return await self.ruleset(conn, user_id)

    async def account_data_event(self, conn: Connection, user_id: str) -> JsonDict:
        """The `m.push_rules` global account data event, as sync delivers it."""
        return {"type": PUSH_RULES_TYPE, "content": {SCOPE: await self.ruleset(conn, user_id)}}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> JsonDict:
        check_kind(kind)
        for rule in (await self.get_all(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise not_found("Push rule not found")

    # -- writing -----------------------------------------------------------------------

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: Mapping[str, Any],
        before: str | None,
        after: str | None,
    ) -> None:
        """PUT /pushrules/global/{kind}/{ruleId}: create or replace a user rule."""
        check_kind(kind)
        if kind == "postcontent":
            raise invalid_param("postcontent rules are the server's: clients may not add them")
        if rule_id.startswith("."):
            raise _bad_rule("Rule ids starting with '.' are reserved for server-default rules")
        if "/" in rule_id or "\\" in rule_id:
            raise _bad_rule("Rule ids may not contain '/' or '\\'")
        if len(rule_id.encode()) > MAX_RULE_ID_BYTES:
            raise _bad_rule(f"Rule ids are at most {MAX_RULE_ID_BYTES} bytes")
        if "actions" not in body:
            raise _missing("'actions' is required")
        actions = check_actions(body["actions"])
        conditions: list[Any] | None = None
        pattern: str | None = None
        if kind in ("override", "underride"):
            conditions = _check_conditions(body.get("conditions", []))
        elif kind == "content":
            if "pattern" not in body:
                raise _missing("Content rules need a 'pattern'")
            if not isinstance(body["pattern"], str):
                raise invalid_param("'pattern' must be a string")
            pattern = body["pattern"]
        for anchor in (before, after):
            if anchor is not None and anchor.startswith("."):
                raise _bad_rule("Rules cannot be placed relative to a server-default rule")
        row = store.PushRuleRow(
            user_id, kind, rule_id, False, 0, conditions, pattern, actions, True
        )

        async def write(conn: Connection) -> None:
            own = [
                r.rule_id
                for r in await store.rules_of_users(conn, [user_id])
                if r.kind == kind and not r.is_default
            ]
            exists = rule_id in own
            order = [r for r in own if r != rule_id]
            anchor = before if before is not None else after
            if anchor is not None:
                if anchor not in order:
                    raise not_found(f"No rule {anchor!r} of kind {kind} to place this rule by")
                index = order.index(anchor)
                order.insert(index if before is not None else index + 1, rule_id)
            elif exists:
                order = own
            else:
                order.insert(0, rule_id)
            await store.upsert_user_rule(conn, row)
            await store.set_priorities(conn, user_id, kind, order)

        await self._change(user_id, write)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        check_kind(kind)
        if rule_id.startswith("."):
            if any(r["rule_id"] == rule_id for r in default_rules(user_id)[kind]):
                raise _bad_rule("Server-default rules cannot be deleted, only disabled")
            raise not_found("Push rule not found")

        async def write(conn: Connection) -> None:
            if not await store.delete_user_rule(conn, user_id, kind, rule_id):
                raise not_found("Push rule not found")

        await self._change(user_id, write)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        if not isinstance(enabled, bool):
            raise invalid_param("'enabled' must be a boolean")
        is_default = await self._check_exists(user_id, kind, rule_id)

        async def write(conn: Connection) -> None:
            await store.set_enabled(conn, user_id, kind, rule_id, enabled, is_default)

        await self._change(user_id, write)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        checked = check_actions(actions)
        is_default = await self._check_exists(user_id, kind, rule_id)

        async def write(conn: Connection) -> None:
            await store.set_actions(conn, user_id, kind, rule_id, checked, is_default)

        await self._change(user_id, write)

    async def copy_room_rules(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        """After a room upgrade, the user's own rules for the old room (its room rule,
        and rules whose conditions name it) apply to the new room as well: each gets a
        copy naming the new room, placed just before it. Copies made before stay."""

        async def write(conn: Connection) -> None:
            rows = [r for r in await store.rules_of_users(conn, [user_id]) if not r.is_default]
            copies = room_rule_copies(rows, old_room_id, new_room_id)
            for original, copy in copies:
                await store.upsert_user_rule(conn, copy)
                if original.enabled is False:
                    await store.set_enabled(conn, user_id, copy.kind, copy.rule_id, False, False)
            placed = {(o.kind, o.rule_id): c.rule_id for o, c in copies}
            for kind in {c.kind for _, c in copies}:
                order: list[str] = []
                for row in rows:
                    if row.kind == kind:
                        copy_id = placed.get((kind, row.rule_id))
                        order += [row.rule_id] if copy_id is None else [copy_id, row.rule_id]
                await store.set_priorities(conn, user_id, kind, order)

        await self._change(user_id, write)

    async def _check_exists(self, user_id: str, kind: str, rule_id: str) -> bool:
        """404 unless the rule exists; whether it is a server-default rule."""
        rule = await self.get_rule(user_id, kind, rule_id)
        return bool(rule.get("default"))

    async def _change(self, user_id: str, write: Any) -> None:
        """Run `write(conn)` and store the merged rules as the user's `m.push_rules`
        account data in the same transaction; then wake their syncs and drop the
        compiled rules here and in the other processes."""
        positions: list[int] = []
        async with self.db.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await account_data.lock_user(conn, user_id)
                    await write(conn)
                    positions = await self.allocator.allocate(account_data.STREAM)
                    rows = await store.rules_of_users(conn, [user_id])
                    await account_data.put_account_data(
                        conn,
                        user_id,
                        account_data.GLOBAL,
                        PUSH_RULES_TYPE,
                        {SCOPE: merge(user_id, rows)},
                        positions[0],
                    )
                    await streams.finish(conn, account_data.STREAM, positions)
            except BaseException:
                await self.allocator.abandon(account_data.STREAM, positions)
                raise
        self._cache.pop(user_id, None)
        self.generation += 1
        await self.notifier.broadcast(BROADCAST_KIND, {"user_id": user_id})
        await self.notifier.notify(account_data.STREAM, positions[0], users=[user_id])
