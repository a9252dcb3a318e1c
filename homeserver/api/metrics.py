"""The Prometheus scrape endpoint, on a listener of its own (`metrics.bind`,
`metrics.port`): it is for the operator's monitoring, never served to clients. Building
it enables the metrics (`metrics.enable`); the Prometheus client is imported from then."""

from __future__ import annotations

from aiohttp import web

from homeserver import metrics


async def scrape(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_metrics_app() -> web.Application:
    metrics.enable()
    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
