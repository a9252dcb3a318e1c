"""The Prometheus scrape endpoint, on a listener of its own (`metrics.bind`,
`metrics.port`): it is for the operator's monitoring, never served to clients."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


async def scrape(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_metrics_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
