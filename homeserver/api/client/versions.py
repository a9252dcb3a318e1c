"""`GET /_matrix/client/versions`: which spec versions clients may rely on."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.services.rooms.delayed_events import UNSTABLE_FEATURE as DELAYED_EVENTS

SPEC_VERSIONS = [f"v1.{minor}" for minor in range(1, 20)]
# Simplified sliding sync (MSC4186), which Element X requires before it logs in.
# Mutual rooms (MSC2666) under Synapse's flags, which Element checks before asking.
UNSTABLE_FEATURES = {
    "org.matrix.simplified_msc3575": True,
    "uk.half-shot.msc2666.query_mutual_rooms": True,
    "uk.half-shot.msc2666.query_mutual_rooms.stable": True,
    "im.nheko.summary": True,
}


async def get_versions(request: web.Request) -> web.Response:
    unstable = {**UNSTABLE_FEATURES, DELAYED_EVENTS: homeserver(request).delayed_events.enabled}
    return json_response({"versions": SPEC_VERSIONS, "unstable_features": unstable})


def register(app: web.Application) -> None:
    app.router.add_get("/_matrix/client/versions", get_versions)
