"""Property-based fuzzing of the whole client-server API from the spec's own OpenAPI.

Schemathesis generates requests from the bundled client-server OpenAPI (v1.19) and
checks each answer: never a 5xx, and every documented response matches its schema.
The server is seeded first (users, rooms with messages and state, an alias, media) and
path parameters point at that data, so requests reach the handlers' real behaviour
rather than stopping at "room not found".
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import RoomUser, auth_header

# The spec bundle the project works from (matrix-spec's own bundled OpenAPI), in the
# shared/ folder beside the checkout unless HOMESERVER_MATRIX_SPEC names another.
_BESIDE = Path(__file__).resolve().parents[3] / "shared" / "matrix-spec"
SPEC = Path(os.environ.get("HOMESERVER_MATRIX_SPEC", _BESIDE)) / "bundled/client-server.json"
MAX_EXAMPLES = 8
# The run takes about 90 s on two cores; well past that, it has hung (and this stops
# it before pytest's own per-test timeout of 300 s).
TIMEOUT_S = 240
# The spec's client-server API has 166 operations; all but the excluded are run.
MIN_OPERATIONS = 160
# Leaving (or forgetting) the seeded room would turn every later room request into
# a 403: these operations get a room of their own.
SPARE_ROOM_PATHS = r"^/_matrix/client/v3/rooms/\{roomId\}/(leave|forget)$"
# Operations whose side effects would undo the seed for every later request.
EXCLUDED_PATHS = [
    # Logging out invalidates the access token every other request carries.
    "/_matrix/client/v3/logout",
    "/_matrix/client/v3/logout/all",
]


def _spec_as_served(tmp_path: Path) -> Path:
    """The bundled OpenAPI with the few response schemas the spec gets wrong corrected
    in place, each narrowly and for a reason; written next to the test's data."""
    spec = json.loads(SPEC.read_text())
    paths = spec["paths"]

    def response(path: str, method: str = "get") -> dict[str, Any]:
        schema: dict[str, Any] = paths[path][method]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        return schema

    # Device fields unknown are null, not absent: Synapse answers so and matrix-nio
    # requires the keys (see services/accounts/devices.render).
    device_schemas = [
        response("/_matrix/client/v3/devices")["properties"]["devices"]["items"],
        response("/_matrix/client/v3/devices/{deviceId}"),
    ]
    for device in device_schemas:
        for field in ("display_name", "last_seen_ip", "last_seen_ts"):
            prop = device["properties"][field]
            prop["type"] = [prop["type"], "null"]
    # A backup's algorithm is stored as the client gave it, as on Synapse: clients
    # trying newer algorithms (MSC3270) use it; the enum lists only the spec's one.
    for path in (
        "/_matrix/client/v3/room_keys/version",
        "/_matrix/client/v3/room_keys/version/{version}",
    ):
        del response(path)["properties"]["algorithm"]["enum"]
    # `format=event` returns the whole event, which is also "an object": the spec's
    # oneOf of the two matches both whatever the server sends; anyOf is what it means.
    state = response("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}")
    state["anyOf"] = state.pop("oneOf")
    # No TURN server configured: an empty object, as Synapse answers and clients expect
    # (matrix-js-sdk looks for `uris`; an error would be retried and logged for ever).
    turn = paths["/_matrix/client/v3/voip/turnServer"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    turn["schema"] = {"anyOf": [turn["schema"], {"type": "object", "maxProperties": 0}]}
    served = tmp_path / "client-server.json"
    served.write_text(json.dumps(spec))
    return served


async def _seed(client: Any) -> dict[str, str]:
    """Two users sharing a public room with an alias, messages and state; a private
    room, a spare room and a media upload; the path parameters pointing at them."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(
        preset="public_chat", room_alias_name="fuzz", name="Fuzz", topic="seeded"
    )
    await bob.join(room_id)
    event_id = await alice.say(room_id, "hello")
    await bob.say(room_id, "hi alice")
    await alice.state(room_id, "m.room.topic", {"topic": "fuzzing"})
    await alice.create_room(preset="private_chat", invite=[bob.user_id])
    spare_room = await alice.create_room(preset="public_chat")
    resp = await client.post(
        "/_matrix/media/v3/upload",
        data=b"seed bytes",
        headers={**alice.headers, "Content-Type": "text/plain"},
    )
    assert resp.status == 200, await resp.text()
    content_uri = (await resp.json())["content_uri"]
    server_name, media_id = content_uri.removeprefix("mxc://").split("/")
    return {
        "token": alice.headers["Authorization"].removeprefix("Bearer "),
        "path.roomId": room_id,
        "path.roomIdOrAlias": room_id,
        "path.roomAlias": "#fuzz:test.local",
        "path.userId": alice.user_id,
        "path.eventId": event_id,
        "path.serverName": server_name,
        "path.mediaId": media_id,
        "spare_room": spare_room,
    }


def _config(seed: dict[str, str]) -> str:
    parameters = {k: v for k, v in seed.items() if k.startswith("path.")}
    lines = ["[parameters]"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in parameters.items()]
    lines += [
        "[[operations]]",
        f"include-path-regex = {json.dumps(SPARE_ROOM_PATHS)}",
        f"parameters = {{ {json.dumps('path.roomId')} = {json.dumps(seed['spare_room'])} }}",
    ]
    return "\n".join(lines) + "\n"


async def test_client_api_fuzz(homeserver_client: Callable[..., Any], tmp_path: Path) -> None:
    client = await homeserver_client(open_registration=True, **{"rate_limits.enabled": False})
    seed = await _seed(client)
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(seed))
    report = tmp_path / "report.json"
    args = [
        "--config-file",
        str(config),
        "run",
        str(_spec_as_served(tmp_path)),
        "--url",
        str(client.make_url("")).rstrip("/"),
        "--header",
        f"Authorization: Bearer {seed['token']}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-deterministic",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        # A long poll (/sync, /events) held this long would be a hang, not an answer.
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    for path in EXCLUDED_PATHS:
        args += ["--exclude-path", path]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its own cache directory lands there, not in the checkout
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = tmp_path / "schemathesis.log"
    log.write_bytes(output)
    assert proc.returncode == 0, f"see {log}\n" + output.decode(errors="replace")[-20000:]
    # Every selected operation was exercised: a run that reached nothing proves nothing.
    summary = json.loads(report.read_text())
    assert summary["complete"] and not summary["failures"] and not summary["errors"]
    operations = summary["operations"]
    assert operations["tested"] == operations["selected"] >= MIN_OPERATIONS, operations
    # The seeded token still works: no excluded side effect slipped through.
    resp = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(seed["token"]))
    assert resp.status == 200
