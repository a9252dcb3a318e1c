"""`GET /health`: the load balancer's readiness check (Synapse serves the same path).

200 `OK` when the database answers; 503 while it does not, or while the process drains
before stopping.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver


async def health(request: web.Request) -> web.Response:
    problem = await homeserver(request).health.problem()
    headers = {"Cache-Control": "no-store"}
    if problem is not None:
        return web.Response(status=503, text=problem, headers=headers)
    return web.Response(text="OK", headers=headers)


def register(app: web.Application) -> None:
    app.router.add_get("/health", health)
