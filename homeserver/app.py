"""Wiring and lifecycle: the aiohttp application, its listeners, and a clean stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from homeserver.api import health, http, wellknown
from homeserver.api.admin import access as admin_access
from homeserver.api.admin import destinations as admin_destinations
from homeserver.api.admin import media as admin_media
from homeserver.api.admin import moderation as admin_moderation
from homeserver.api.admin import register as admin_register
from homeserver.api.admin import registration_tokens
from homeserver.api.admin import reports as admin_reports
from homeserver.api.admin import room_history as admin_room_history
from homeserver.api.admin import room_tools as admin_room_tools
from homeserver.api.admin import rooms as admin_rooms
from homeserver.api.admin import users as admin_users
from homeserver.api.client import (
    account,
    account_data,
    appservice,
    capabilities,
    cross_signing,
    delayed_events,
    devices,
    directory,
    email_validation,
    filters,
    hierarchy,
    key_backup,
    keys,
    login,
    logout,
    media,
    membership,
    messages,
    notifications,
    openid,
    presence,
    profile,
    public_rooms,
    push_rules,
    pushers,
    receipts,
    relations,
    reports,
    room_state,
    rooms,
    search,
    send,
    sliding_sync,
    sso,
    sync,
    tags,
    to_device,
    typing,
    upgrade,
    user_directory,
    versions,
    voip,
)
from homeserver.api.client import register as client_register
from homeserver.api.context import HOMESERVER
from homeserver.api.federation import auth as federation_auth
from homeserver.api.federation import directory as federation_directory
from homeserver.api.federation import e2ee as federation_e2ee
from homeserver.api.federation import keys as federation_keys
from homeserver.api.federation import media as federation_media
from homeserver.api.federation import membership as federation_membership
from homeserver.api.federation import openid as federation_openid
from homeserver.api.federation import reads as federation_reads
from homeserver.api.federation import transactions as federation_transactions
from homeserver.api.federation import version as federation_version
from homeserver.api.metrics import build_metrics_app
from homeserver.config import Config, ConfigError
from homeserver.datadir import DataDirLock, load_or_create_signing_key
from homeserver.services.appservices.registry import load_registry
from homeserver.services.email.mailer import MailError
from homeserver.services.homeserver import Homeserver
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core import migrate_apart
from homeserver.storage.core.embedded_postgres import EmbeddedPostgres
from homeserver.storage.core.pool import Database, DatabaseUnreachable, check_connection

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
# Allocations (net of frees) between young collections: CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000
# How often the embedded PostgreSQL is checked on; how long it must have run to count
# as started well; the longest wait before starting it again when it keeps exiting.
EMBEDDED_CHECK_INTERVAL_S = 0.5
EMBEDDED_STABLE_S = 10.0
EMBEDDED_MAX_RELAUNCH_DELAY_S = 30.0


# Every API module, registered in this order (aiohttp matches routes in that order).
ROUTE_MODULES = (
    health,
    versions,
    wellknown,
    federation_keys,
    federation_version,
    federation_e2ee,
    federation_transactions,
    federation_membership,
    federation_reads,
    federation_directory,
    federation_media,
    federation_openid,
    client_register,
    openid,
    appservice,
    login,
    sso,
    logout,
    devices,
    account,
    email_validation,
    registration_tokens,
    admin_users,
    admin_rooms,
    admin_moderation,
    admin_register,
    admin_reports,
    admin_destinations,
    admin_room_tools,
    admin_media,
    admin_room_history,
    rooms,
    membership,
    send,
    delayed_events,
    room_state,
    messages,
    relations,
    profile,
    account_data,
    tags,
    filters,
    capabilities,
    keys,
    cross_signing,
    key_backup,
    user_directory,
    directory,
    public_rooms,
    upgrade,
    hierarchy,
    search,
    reports,
    typing,
    receipts,
    presence,
    to_device,
    sync,
    sliding_sync,
    push_rules,
    notifications,
    pushers,
    media,
    voip,
)


def build_app(hs: Homeserver) -> web.Application:
    in_flight = http.InFlight(
        hs.config.max_request_size,
        [
            (
                lambda path: path.startswith(http.FEDERATION_PREFIX),
                federation_auth.federation_auth_middleware,
            ),
            (admin_access.is_admin_path, admin_access.admin_auth_middleware),
        ],
        hs.config.x_forwarded,
    )
    app = web.Application(
        middlewares=[in_flight.middleware],
        client_max_size=hs.config.max_request_size,
    )
    app[HOMESERVER] = hs
    http.refuse_unparsable_requests_in_json()
    app[http.IN_FLIGHT] = in_flight
    for module in ROUTE_MODULES:
        module.register(app)
    return app


@contextmanager
def database_conninfo(config: Config) -> Iterator[str]:
    """The database to use: the configured URL, or the embedded cluster for the
    duration of the block."""
    with database(config) as (conninfo, _):
        yield conninfo


@contextmanager
def database(config: Config) -> Iterator[tuple[str, EmbeddedPostgres | None]]:
    """As database_conninfo, with the embedded cluster when there is one."""
    if config.database_url:
        yield config.database_url, None
        return
    embedded = EmbeddedPostgres(config.postgres_dir)
    try:
        yield embedded.start(), embedded
    finally:
        embedded.stop()


async def supervise(embedded: EmbeddedPostgres) -> None:
    """Start the embedded PostgreSQL again when it exits under the running server
    (stopped or killed by hand); meanwhile the server answers 503."""
    delay = 0.0
    launched = -EMBEDDED_STABLE_S  # the first start waited until it accepted connections
    while True:
        await asyncio.sleep(EMBEDDED_CHECK_INTERVAL_S)
        status = embedded.exit_status()
        if status is None:
            continue
        # One that keeps exiting soon after each start is started less and less often.
        if time.monotonic() - launched < EMBEDDED_STABLE_S:
            delay = min(max(2 * delay, 1.0), EMBEDDED_MAX_RELAUNCH_DELAY_S)
        else:
            delay = 0.0
        log.error(
            "the embedded PostgreSQL exited (status %s, see %s); starting it again in %.0f s",
            status,
            embedded.log_path,
            delay,
        )
        await asyncio.sleep(delay)
        embedded.relaunch()
        launched = time.monotonic()


def prepare_database(conninfo: str) -> None:
    """Check that the database answers, then bring its schema up to date."""
    try:
        check_connection(conninfo)
    except DatabaseUnreachable as exc:
        raise ConfigError(f"cannot connect to the database: {exc}") from None
    try:
        migrate_apart.upgrade(conninfo)
    except migrate_apart.MigrationError as exc:
        raise ConfigError(f"cannot migrate the database: {exc}") from None


async def _open_database(config: Config, conninfo: str) -> Database:
    db = Database(conninfo, size=config.database_pool_size)
    try:
        await db.open()
    except Exception as exc:
        await db.close()
        raise ConfigError(f"cannot connect to the database: {exc}") from None
    return db


def server_tls_context(config: Config) -> ssl.SSLContext:
    """The TLS listener's context; also used by tests that serve federation over TLS."""
    assert config.tls_cert and config.tls_key
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


async def serve(config: Config, conninfo: str, embedded: EmbeddedPostgres | None = None) -> None:
    """Run until SIGINT or SIGTERM, then drain (see `drain`)."""
    signing_key = load_or_create_signing_key(config.signing_key_file)
    db = await _open_database(config, conninfo)
    hs = build_homeserver(config=config, db=db, signing_key=signing_key)
    try:
        await hs.mailer.check()
    except MailError as exc:
        await db.close()
        raise ConfigError(f"email: {exc}") from None
    await hs.start()
    supervisor = None if embedded is None else asyncio.create_task(supervise(embedded))
    app = build_app(hs)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False
    )
    await runner.setup()
    metrics_runner = None
    if config.metrics_port is not None:  # metrics enabled before start-up is frozen
        metrics_runner = web.AppRunner(build_metrics_app(), access_log=None, handle_signals=False)
        await metrics_runner.setup()
    tune_gc()
    try:
        sites = [web.TCPSite(runner, config.bind, config.port)]
        if metrics_runner is not None:
            sites.append(web.TCPSite(metrics_runner, config.metrics_bind, config.metrics_port))
        if config.tls_port is not None:
            sites.append(
                web.TCPSite(
                    runner, config.bind, config.tls_port, ssl_context=server_tls_context(config)
                )
            )
        for site in sites:
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {site.name}: {exc.strerror}") from None
        log.info("serving %s on %s", config.server_name, ", ".join(site.name for site in sites))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await drain(hs, app, sites)
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await hs.close()
        await db.close()


async def drain(hs: Homeserver, app: web.Application, sites: list[web.TCPSite]) -> None:
    """The first half of a clean stop: `/health` fails and held long-polls are answered
    (their clients sync again, through the load balancer, elsewhere), the listeners
    close, and requests in flight finish, their bodies still being read, within
    SHUTDOWN_TIMEOUT. Closing the services then lets go of every lock, so the other
    processes take over the background work."""
    log.info("stopping: finishing in-flight requests")
    hs.health.drain()
    for site in sites:
        await site.stop()
    in_flight = app[http.IN_FLIGHT]
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT):
            await in_flight.wait_idle()
    except TimeoutError:
        log.warning("stopping: %d requests still running are cut short", in_flight.count)


def tune_gc() -> None:
    """Collect cycles less often, and never scan what start-up built again.

    An answer of many events (an initial sync of 1,000 rooms renders 18,000) allocates
    dicts that live until the answer is written: with CPython's default threshold (700)
    they set off young collections every few hundred and full ones over the whole heap,
    a third of that sync's CPU. Nearly all of our garbage is freed by reference counts;
    cycles wait a little longer. Start-up's objects (modules, tables, the app) live as
    long as the process: frozen, full collections skip them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def run(config: Config) -> None:
    """The whole life of `homeserver run`."""
    load_registry(config.app_service_config_files, config.server_name)  # fail before starting
    lock = DataDirLock(config.data_dir)
    lock.acquire()
    try:
        with database(config) as (conninfo, embedded):
            prepare_database(conninfo)
            asyncio.run(serve(config, conninfo, embedded))
    finally:
        lock.release()
    log.info("stopped")
