"""Route registration, with the legacy `r0` prefix served as an alias of `v3`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_PREFIX = "/_matrix/client"


def add_client_route(
    app: web.Application,
    method: str,
    path: str,
    handler: RouteHandler,
    versions: Iterable[str] = ("v3", "r0"),
) -> None:
    """Serve `path` under every listed client API version prefix."""
    for version in versions:
        app.router.add_route(method, f"{CLIENT_PREFIX}/{version}{path}", handler)
