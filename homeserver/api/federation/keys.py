"""`GET /_matrix/key/v2/server`: our signing keys, self-signed."""

from __future__ import annotations

import time

from aiohttp import web

from federation.keys import encode_verify_key
from federation.signing import sign_json
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response

KEY_VALIDITY_MS = 24 * 60 * 60 * 1000


async def get_server_keys(request: web.Request) -> web.Response:
    hs = homeserver(request)
    body = {
        "server_name": hs.server_name,
        "valid_until_ts": int(time.time() * 1000) + KEY_VALIDITY_MS,
        "verify_keys": {
            hs.signing_key.key_id: {"key": encode_verify_key(hs.signing_key.verify_key)}
        },
        "old_verify_keys": {},
    }
    return json_response(sign_json(body, hs.server_name, hs.signing_key))


def register(app: web.Application) -> None:
    app.router.add_get("/_matrix/key/v2/server", get_server_keys)
    app.router.add_get("/_matrix/key/v2/server/{key_id}", get_server_keys)
