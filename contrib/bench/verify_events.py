"""Benchmark receiving events over federation: format, hash, signatures and auth rules.

    python contrib/bench/verify_events.py [--events N] [--members N] [--runs N] [--version V ...]

Builds a room per room version as its servers would: the create event, the creator's
join, power levels, public join rules and history visibility, `members` joins from 20
servers, a few display name changes, and messages for the rest, each event really
hashed and signed by its sender's server with a freshly generated ed25519 key. The
events are serialised to JSON and parsed back, as a receiving server gets them; then,
for each run, every event is checked in order from the parsed dicts:
`pdu_checks.check_pdu` (format, content hash, signatures through a key lookup), then
`auth_rules.check_auth_events_shape` and `auth_rules.check_auth` against its auth
events. One process, one core; prints the median over the runs in events/s and ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from federation.auth_rules import auth_types_for, check_auth, check_auth_events_shape
from federation.builder import build_event
from federation.events import CREATE_KEY, Event, StateKey
from federation.keys import KeyLookup, ServerKey, SigningKey, generate_signing_key
from federation.pdu_checks import check_pdu
from federation.room_versions import RoomVersion, get_room_version
from federation.types import JsonDict

SERVERS = [f"server{i}.bench.test" for i in range(20)]
ADMIN = f"@admin:{SERVERS[0]}"
TS = 1_700_000_000_000
KEY_VALID_UNTIL = TS + 10**12


def build_room(
    version: RoomVersion, keys: dict[str, SigningKey], n_events: int, n_members: int
) -> list[JsonDict]:
    """The room's events, oldest first, as the PDU dicts their servers would send."""
    pdus: list[JsonDict] = []
    state: dict[StateKey, str] = {}
    room_id: str | None = None
    last: str | None = None

    def send(event_type: str, sender: str, content: JsonDict, state_key: str | None = None) -> None:
        nonlocal room_id, last
        types = auth_types_for(version, event_type, sender, state_key, content)
        event = build_event(
            version,
            keys[sender.partition(":")[2]],
            event_type=event_type,
            sender=sender,
            content=content,
            prev_events=[last] if last else [],
            auth_events=[state[key] for key in sorted(types) if key in state],
            depth=len(pdus) + 1,
            origin_server_ts=TS + len(pdus),
            room_id=room_id,
            state_key=state_key,
        )
        if room_id is None:
            room_id = event.room_id
        pdus.append(event.pdu)
        last = event.event_id
        if state_key is not None:
            state[(event_type, state_key)] = event.event_id

    create: JsonDict = {"room_version": version.identifier}
    if not version.msc2175_implicit_room_creator:
        create["creator"] = ADMIN
    if not version.room_id_from_create_event:
        room_id = f"!bench:{SERVERS[0]}"  # from v12 it derives from the create event's id
    send("m.room.create", ADMIN, create, "")
    send("m.room.member", ADMIN, {"membership": "join", "displayname": "Admin"}, ADMIN)
    users = [f"@user{i}:{SERVERS[i % len(SERVERS)]}" for i in range(n_members)]
    admins = {} if version.privileged_creators else {ADMIN: 100}
    send("m.room.power_levels", ADMIN, {"users": {**admins, users[0]: 50}}, "")
    send("m.room.join_rules", ADMIN, {"join_rule": "public"}, "")
    send("m.room.history_visibility", ADMIN, {"history_visibility": "shared"}, "")

    for i, user in enumerate(users):
        send("m.room.member", user, {"membership": "join", "displayname": f"User {i}"}, user)
    for i, user in enumerate(users[:50]):
        send("m.room.member", user, {"membership": "join", "displayname": f"Renamed {i}"}, user)
    i = 0
    while len(pdus) < n_events:
        sender = users[(i * 7919) % len(users)]
        text = f"message {i}: the quick brown fox jumps over the lazy dog"
        send("m.room.message", sender, {"msgtype": "m.text", "body": text})
        i += 1
    return pdus


def verify_room(pdus: list[JsonDict], version: RoomVersion, lookup: KeyLookup) -> list[Event]:
    """Check every event as a receiving server does; raise on any failure."""
    accepted: dict[str, Event] = {}
    create: Event | None = None
    for pdu in pdus:
        checked = check_pdu(pdu, version, lookup)
        if checked.redacted:
            raise AssertionError("content hash mismatch in a benchmark event")
        event = checked.event
        auth_events = [accepted[auth_id] for auth_id in event.auth_event_ids]
        check_auth_events_shape(event, auth_events)
        auth_state = {auth_event.state_tuple: auth_event for auth_event in auth_events}
        if create is not None and version.room_id_from_create_event:
            auth_state[CREATE_KEY] = create  # implied by the room id from v12
        check_auth(event, auth_state)
        if create is None:
            create = event
        accepted[event.event_id] = event
    return list(accepted.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--version", nargs="+", default=["10", "12"])
    args = parser.parse_args()

    keys = {server: generate_signing_key() for server in SERVERS}
    published = {
        (server, key.key_id): ServerKey(key.verify_key, KEY_VALID_UNTIL)
        for server, key in keys.items()
    }

    def lookup(server: str, key_id: str) -> ServerKey | None:
        return published.get((server, key_id))

    for identifier in args.version:
        version = get_room_version(identifier)
        start = time.perf_counter()
        pdus = build_room(version, keys, args.events, args.members)
        wire = [orjson.dumps(pdu) for pdu in pdus]
        build_s = time.perf_counter() - start

        timings = []
        for _ in range(args.runs):
            received = [orjson.loads(body) for body in wire]  # fresh dicts every run
            start = time.perf_counter()
            events = verify_room(received, version, lookup)
            timings.append(time.perf_counter() - start)
        assert len(events) == len(pdus)

        median = statistics.median(timings)
        print(
            f"room v{version.identifier}: {len(pdus)} events "
            f"(built and signed in {build_s:.1f} s), {args.runs} runs: "
            f"median {median * 1000:.0f} ms = {len(pdus) / median:,.0f} events/s, "
            f"best {min(timings) * 1000:.0f} ms = {len(pdus) / min(timings):,.0f} events/s"
        )


if __name__ == "__main__":
    main()
