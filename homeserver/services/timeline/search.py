"""Server-side search of room events (`POST /search`, category `room_events`).

PostgreSQL's full-text search does the matching and ranking over the `search_vector`
that every message, name and topic event gets when it is stored. A search covers the
rooms the user is in, and the rooms they left (up to when they left); every hit then
goes through history visibility, so nothing the user could not read in the room is
found here either.

Query words are matched as prefixes ("deploy" finds "deployment") with the 'simple'
configuration: no stemming or stop words, which would only suit one language.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import bad_json, invalid_param
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.timeline.format import format_events
from homeserver.services.timeline.pagination import gap_before, token_for
from homeserver.services.timeline.visibility import filter_visible
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, state
from homeserver.storage.timeline import search as search_store
from homeserver.storage.timeline import timeline
from homeserver.storage.timeline.search import SearchHit, SearchQuery

KEY_TYPES = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
_TEXT_KEY = {event_type: key.split(".")[1] for key, event_type in KEY_TYPES.items()}
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 20
MAX_WORDS = 16
# Matches judged by history visibility for `count`, the newest first.
COUNT_LIMIT = 1000
_WORD = re.compile(r"[^\W_]+")


def _list_of_str(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{name} must be a list of strings")
    return value


def _bounded_int(value: Any, name: str, default: int, maximum: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if type(value) is not int or value < minimum:
        raise bad_json(f"{name} must be an integer of at least {minimum}")
    return min(value, maximum)


def _type_matches(pattern: str, event_type: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), event_type) is not None


@dataclass(frozen=True)
class RoomEventsCriteria:
    """A validated `room_events` category."""

    words: tuple[str, ...]
    types: tuple[str, ...]
    order_by: str = "rank"
    limit: int = DEFAULT_LIMIT
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    contains_url: bool | None = None
    context: tuple[int, int, bool] | None = None  # before, after, include_profile
    include_state: bool = False
    group_by: tuple[str, ...] = ()


def parse_room_events(body: Mapping[str, Any]) -> RoomEventsCriteria:
    term = body.get("search_term")
    if not isinstance(term, str):
        raise bad_json("search_term must be a string")
    keys = _list_of_str(body.get("keys"), "keys") or list(KEY_TYPES)
    if any(k not in KEY_TYPES for k in keys):
        raise bad_json(f"keys must be among {', '.join(KEY_TYPES)}")
    order_by = body.get("order_by", "rank")
    if order_by not in ("rank", "recent"):
        raise bad_json("order_by must be 'rank' or 'recent'")
    flt = body.get("filter") or {}
    if not isinstance(flt, dict):
        raise bad_json("filter must be an object")
    types = [KEY_TYPES[k] for k in dict.fromkeys(keys)]
    wanted = _list_of_str(flt.get("types"), "filter.types")
    unwanted = _list_of_str(flt.get("not_types"), "filter.not_types") or []
    types = [
        t
        for t in types
        if (wanted is None or any(_type_matches(p, t) for p in wanted))
        and not any(_type_matches(p, t) for p in unwanted)
    ]
    contains_url = flt.get("contains_url")
    if contains_url is not None and not isinstance(contains_url, bool):
        raise bad_json("filter.contains_url must be a boolean")
    context = None
    raw_context = body.get("event_context")
    if raw_context is not None:
        if not isinstance(raw_context, dict):
            raise bad_json("event_context must be an object")
        context = (
            _bounded_int(
                raw_context.get("before_limit"), "before_limit", DEFAULT_CONTEXT, MAX_CONTEXT
            ),
            _bounded_int(
                raw_context.get("after_limit"), "after_limit", DEFAULT_CONTEXT, MAX_CONTEXT
            ),
            raw_context.get("include_profile") is True,
        )
    groupings = body.get("groupings") or {}
    group_by = groupings.get("group_by", []) if isinstance(groupings, dict) else None
    if not isinstance(group_by, list) or not all(
        isinstance(g, dict) and g.get("key") in ("room_id", "sender") for g in group_by
    ):
        raise bad_json("groupings.group_by must list objects with key room_id or sender")
    rooms = _list_of_str(flt.get("rooms"), "filter.rooms")
    senders = _list_of_str(flt.get("senders"), "filter.senders")
    return RoomEventsCriteria(
        words=tuple(dict.fromkeys(_WORD.findall(term.lower())))[:MAX_WORDS],
        types=tuple(types),
        order_by=order_by,
        limit=_bounded_int(flt.get("limit"), "filter.limit", DEFAULT_LIMIT, MAX_LIMIT, 1),
        rooms=None if rooms is None else tuple(rooms),
        not_rooms=tuple(_list_of_str(flt.get("not_rooms"), "filter.not_rooms") or ()),
        senders=None if senders is None else tuple(senders),
        not_senders=tuple(_list_of_str(flt.get("not_senders"), "filter.not_senders") or ()),
        contains_url=contains_url,
        context=context,
        include_state=body.get("include_state") is True,
        group_by=tuple(dict.fromkeys(g["key"] for g in group_by)),
    )


@dataclass(frozen=True)
class _Batch:
    """Where a page starts: an offset (rank order) or a stream position (recent
    order), optionally within one group (a room or a sender)."""

    order_by: str
    offset: int = 0
    before: int | None = None
    group: tuple[str, str] | None = None

    def encode(self) -> str:
        raw = orjson.dumps([self.order_by, self.offset, self.before, self.group])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_int(value: Any, limit: int) -> bool:
    return type(value) is int and 0 <= value < limit


def _parse_batch(token: str, order_by: str) -> _Batch:
    """A next_batch we issued for this ordering, or 400 M_INVALID_PARAM."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if not (isinstance(value, list) and len(value) == 4 and value[0] == order_by):
        raise invalid_param("Unknown next_batch token")
    _, offset, before, group = value
    valid_group = group is None or (
        isinstance(group, list)
        and len(group) == 2
        and group[0] in ("room_id", "sender")
        and isinstance(group[1], str)
    )
    if not (_is_int(offset, 2**31) and (before is None or _is_int(before, 2**63)) and valid_group):
        raise invalid_param("Unknown next_batch token")
    return _Batch(order_by, offset, before, (group[0], group[1]) if group else None)


@dataclass
class _Page:
    hits: list[SearchHit] = field(default_factory=list)
    count: int = 0
    more: bool = False


class SearchService:
    def __init__(self, db: Database, event_cache: EventCache) -> None:
        self.db = db
        self.event_cache = event_cache

    async def search(
        self, requester: Requester, body: Mapping[str, Any], next_batch: str | None
    ) -> dict[str, Any]:
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise bad_json("search_categories must be an object")
        raw = categories.get("room_events")
        if raw is None:
            return {"search_categories": {}}
        if not isinstance(raw, dict):
            raise bad_json("room_events must be an object")
        criteria = parse_room_events(raw)
        batch = (
            _parse_batch(next_batch, criteria.order_by) if next_batch else _Batch(criteria.order_by)
        )
        result = await self._room_events(requester, criteria, batch)
        return {"search_categories": {"room_events": result}}

    async def _searched_rooms(
        self, conn: Connection, user_id: str, criteria: RoomEventsCriteria, batch: _Batch
    ) -> dict[str, int | None]:
        rows = await memberships.rooms_of_user(conn, user_id, ("join", "leave", "ban"))
        rooms = {r.room_id: None if r.membership == "join" else r.stream_ordering for r in rows}
        keep = set(rooms) - set(criteria.not_rooms)
        if criteria.rooms is not None:
            keep &= set(criteria.rooms)
        if batch.group is not None and batch.group[0] == "room_id":
            keep &= {batch.group[1]}
        return {room_id: rooms[room_id] for room_id in keep}

    async def _room_events(
        self, requester: Requester, criteria: RoomEventsCriteria, batch: _Batch
    ) -> dict[str, Any]:
        empty: dict[str, Any] = {"results": [], "count": 0, "highlights": []}
        if not criteria.words or not criteria.types:
            return empty
        user_id = requester.user_id
        cache = self.event_cache
        async with self.db.pool.connection() as conn:
            rooms = await self._searched_rooms(conn, user_id, criteria, batch)
            if not rooms:
                return empty
            senders = criteria.senders
            if batch.group is not None and batch.group[0] == "sender":
                senders = (batch.group[1],) if senders is None or batch.group[1] in senders else ()
            query = SearchQuery(
                tsquery=" & ".join(f"{word}:*" for word in criteria.words),
                rooms=rooms,
                types=criteria.types,
                senders=senders,
                not_senders=criteria.not_senders,
                contains_url=criteria.contains_url,
            )
            page = await self._page(conn, user_id, query, criteria, batch)
            rows = await event_store.get_events(conn, [h.event_id for h in page.hits])
            ordered = [rows[h.event_id] for h in page.hits if h.event_id in rows]
            visible = await filter_visible(conn, cache, user_id, ordered)
            shown = {row.event_id for row in visible.rows}
            hits = [h for h in page.hits if h.event_id in shown]
            events = await format_events(
                conn,
                cache,
                [h.event_id for h in hits],
                user_id=user_id,
                device_id=requester.device_id,
                memberships=visible.memberships,
            )
            results: list[dict[str, Any]] = [
                {"rank": hit.rank, "result": event} for hit, event in zip(hits, events, strict=True)
            ]
            if criteria.context is not None:
                for result, hit in zip(results, hits, strict=True):
                    result["context"] = await self._context(conn, user_id, hit, criteria.context)
            out: dict[str, Any] = {
                "results": results,
                "count": page.count,
                "highlights": await self._highlights(conn, criteria.words, hits),
            }
            if criteria.include_state:
                # Current state only of rooms the user is in: a left room's is not theirs.
                joined = {h.room_id for h in hits if rooms.get(h.room_id, 0) is None}
                out["state"] = await self._state(conn, joined)
        next_token = self._next(batch, page) if page.more else None
        if next_token is not None:
            out["next_batch"] = next_token.encode()
        if criteria.group_by:
            out["groups"] = self._groups(criteria, batch, page, results, next_token)
        return out

    async def _page(
        self,
        conn: Connection,
        user_id: str,
        query: SearchQuery,
        criteria: RoomEventsCriteria,
        batch: _Batch,
    ) -> _Page:
        limit = criteria.limit
        if criteria.order_by == "rank":
            hits = await search_store.search_by_rank(conn, query, limit + 1, batch.offset)
        else:
            hits = await search_store.search_by_recent(conn, query, limit + 1, batch.before)
        count = await self._count_visible(conn, user_id, query)
        return _Page(hits=hits[:limit], count=count, more=len(hits) > limit)

    async def _count_visible(self, conn: Connection, user_id: str, query: SearchQuery) -> int:
        """How many matches the user may see: counting every match would tell them how
        much was said where history is hidden from them (before they joined, while they
        were away). Past COUNT_LIMIT matches the count is a lower bound, which the spec's
        "approximate count" allows."""
        ids = await search_store.matching_ids(conn, query, COUNT_LIMIT)
        rows = await event_store.get_events(conn, ids)
        visible = await filter_visible(conn, self.event_cache, user_id, list(rows.values()))
        return len(visible.rows)

    @staticmethod
    def _next(batch: _Batch, page: _Page) -> _Batch:
        if batch.order_by == "rank":
            return _Batch("rank", batch.offset + len(page.hits), None, batch.group)
        return _Batch("recent", 0, page.hits[-1].stream_ordering, batch.group)

    @staticmethod
    def _groups(
        criteria: RoomEventsCriteria,
        batch: _Batch,
        page: _Page,
        results: Sequence[dict[str, Any]],
        next_token: _Batch | None,
    ) -> dict[str, dict[str, Any]]:
        """Results of this page by room or sender. A group's own next_batch continues
        within the group; in rank order that needs the group's offset, known only on a
        first page or when already paging within that group."""
        groups: dict[str, dict[str, Any]] = {}
        for key in criteria.group_by:
            by_value: dict[str, dict[str, Any]] = {}
            for result in results:
                value = result["result"]["room_id" if key == "room_id" else "sender"]
                group = by_value.setdefault(value, {"results": [], "order": len(by_value) + 1})
                group["results"].append(result["result"]["event_id"])
            for value, group in by_value.items():
                if next_token is None:
                    continue
                if batch.order_by == "recent":
                    last = [h for h in page.hits if h.event_id == group["results"][-1]]
                    group["next_batch"] = _Batch(
                        "recent", 0, last[0].stream_ordering, (key, value)
                    ).encode()
                elif batch.group == (key, value) or (batch.group is None and batch.offset == 0):
                    start = batch.offset if batch.group == (key, value) else 0
                    offset = start + len(group["results"])
                    group["next_batch"] = _Batch("rank", offset, None, (key, value)).encode()
            groups[key] = by_value
        return groups

    async def _highlights(
        self, conn: Connection, words: Sequence[str], hits: Sequence[SearchHit]
    ) -> list[str]:
        """The query words, and the words of the results that they matched as prefixes."""
        found = await load_events(conn, self.event_cache, [h.event_id for h in hits])
        out = set(words)
        for event in found.values():
            text = event.content.get(_TEXT_KEY.get(event.type, "body"))
            if isinstance(text, str):
                for token in _WORD.findall(text):
                    if any(token.lower().startswith(w) for w in words):
                        out.add(token)
        return sorted(out)

    async def _context(
        self, conn: Connection, user_id: str, hit: SearchHit, limits: tuple[int, int, bool]
    ) -> dict[str, Any]:
        before, after, include_profile = limits
        cache = self.event_cache
        earlier, later = await search_store.events_around(
            conn, hit.room_id, hit.stream_ordering, before, after
        )
        rows = await event_store.get_events(conn, [*earlier, *later, hit.event_id])
        visible = await filter_visible(
            conn, cache, user_id, [rows[e] for e in (*earlier, *later) if e in rows]
        )
        shown = {row.event_id for row in visible.rows}
        earlier = [e for e in earlier if e in shown]
        later = [e for e in later if e in shown]
        positions = await timeline.positions_of(conn, [*earlier, *later, hit.event_id])
        first = positions.get(earlier[-1] if earlier else hit.event_id)
        last = positions.get(later[-1] if later else hit.event_id)
        context: dict[str, Any] = {
            "events_before": await format_events(
                conn, cache, earlier, user_id=user_id, memberships=visible.memberships
            ),
            "events_after": await format_events(
                conn, cache, later, user_id=user_id, memberships=visible.memberships
            ),
        }
        if first is not None and last is not None:
            context["start"] = token_for(gap_before(first))
            context["end"] = token_for(last)
        if include_profile:
            context["profile_info"] = await self._profiles(
                conn, hit.room_id, [*earlier, hit.event_id, *later]
            )
        return context

    async def _profiles(
        self, conn: Connection, room_id: str, event_ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        """Display names and avatars of the senders, as the room knows them now."""
        found = await load_events(conn, self.event_cache, event_ids)
        out: dict[str, dict[str, str]] = {}
        for sender in sorted({event.sender for event in found.values()}):
            member = await memberships.get_membership(conn, room_id, sender)
            profile: dict[str, str] = {}
            if member is not None and member.displayname:
                profile["displayname"] = member.displayname
            if member is not None and member.avatar_url:
                profile["avatar_url"] = member.avatar_url
            out[sender] = profile
        return out

    async def _state(self, conn: Connection, room_ids: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for room_id in sorted(room_ids):
            ids = await state.get_current_state(conn, room_id)
            out[room_id] = await format_events(conn, self.event_cache, sorted(ids.values()))
        return out
