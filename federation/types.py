"""The JSON object type that every layer passes around: events, request and response
bodies, keys.

It lives here, in the pure protocol library at the bottom of the import graph, because
federation/ needs it and may import nothing of homeserver/, while every layer of
homeserver/ (api, services, storage) may import federation/: one definition serves all.
"""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]
