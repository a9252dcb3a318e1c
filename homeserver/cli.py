"""The `homeserver` command: run, generate-config, migrate, register, registration
tokens, rotate-key, backup and restore."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from homeserver import app, backup
from homeserver.config import (
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    read_config_file,
    resolve_data_dir,
)
from homeserver.datadir import DataDirLock, ensure_layout, rotate_signing_key
from homeserver.logs import setup_logging
from homeserver.services.accounts.accounts import AccountService
from homeserver.services.accounts.passwords import Passwords
from homeserver.services.accounts.registration_tokens import RegistrationTokens
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.storage.core.embedded_postgres import EmbeddedPostgresError, running_conninfo
from homeserver.storage.core.pool import Database, OperationalError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: DATA_DIR/homeserver.yaml)")
    parser.add_argument("--data-dir", help="data directory (default: ./homeserver-data)")
    parser.add_argument("--server-name", dest="server_name", help="server name")
    parser.add_argument("--database-url", dest="database__url", help="external PostgreSQL URL")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    common = {"server_name", "database.url"}
    for setting in SETTINGS:
        if not setting.flag or setting.key in common or setting.type in (dict, list):
            continue
        if setting.type is bool:
            parser.add_argument(
                setting.flag_name,
                dest=setting.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=setting.help,
            )
        else:
            # Tuples and durations are parsed from the text by the config's own coercion.
            kind = setting.type if setting.type in (int, float, str) else str
            parser.add_argument(setting.flag_name, dest=setting.dest, type=kind, help=setting.help)
    # The short spelling people reach for when benchmarking or testing.
    parser.add_argument(
        "--no-rate-limits",
        dest="rate_limits__enabled",
        action="store_const",
        const=False,
        help="same as --no-rate-limits-enabled",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeserver", description="A Matrix homeserver.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the server")
    _add_common(run)
    _add_run_flags(run)
    gen = sub.add_parser("generate-config", help="create the data directory and its config")
    _add_common(gen)
    mig = sub.add_parser("migrate", help="apply pending database migrations and exit")
    _add_common(mig)
    reg = sub.add_parser("register", help="create a user account")
    _add_common(reg)
    reg.add_argument("user", help="localpart or full user id")
    reg.add_argument("--password", required=True)
    reg.add_argument("--admin", action="store_true", help="make the user a server admin")
    rot = sub.add_parser(
        "rotate-key",
        help="replace the signing key (the old one stays published as expired);"
        " the server must be stopped",
    )
    _add_common(rot)
    tok = sub.add_parser(
        "registration-token",
        help="manage tokens that let people register (see registration_requires_token)",
    )
    tok_sub = tok.add_subparsers(dest="token_command", required=True)
    create = tok_sub.add_parser("create", help="create a token and print it")
    _add_common(create)
    create.add_argument("--token", help="the token text (default: 16 random characters)")
    create.add_argument("--uses", type=int, help="registrations allowed (default: unlimited)")
    create.add_argument(
        "--expiry-ms", type=int, help="expiry as a Unix time in milliseconds (default: never)"
    )
    listing = tok_sub.add_parser("list", help="list tokens with their use counts")
    _add_common(listing)
    delete = tok_sub.add_parser("delete", help="delete a token")
    _add_common(delete)
    delete.add_argument("token")
    bak = sub.add_parser("backup", help="back up the database, signing key and media (live)")
    _add_common(bak)
    bak.add_argument("dir", type=Path, help="a new or empty directory")
    res = sub.add_parser("restore", help="restore a backup (the server must be stopped)")
    _add_common(res)
    res.add_argument("dir", type=Path, help="a directory written by `homeserver backup`")
    return parser


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {}
    for setting in SETTINGS:
        if hasattr(args, setting.dest):
            values[setting.key] = getattr(args, setting.dest)
    return values


def resolve_config(args: argparse.Namespace, environ: dict[str, str]) -> Config:
    """Flags over environment over config file over defaults; creates the data dir."""
    data_dir = resolve_data_dir(args.data_dir, environ)
    flags = _flag_values(args)
    config_path = Path(args.config or environ.get("HOMESERVER_CONFIG") or "")
    if not args.config and not environ.get("HOMESERVER_CONFIG"):
        server_name = (
            flags.get("server_name") or environ.get("HOMESERVER_SERVER_NAME") or "localhost"
        )
        config_path = ensure_layout(data_dir, server_name)
    else:
        ensure_layout(data_dir, "localhost")
    file_values = read_config_file(config_path)
    return load_config(data_dir, file_values, environ, flags)


@contextmanager
def _database_for_tool(config: Config) -> Iterator[str]:
    """A database for a one-off command, whether or not the server is running."""
    lock = DataDirLock(config.data_dir)
    if config.database_url:
        yield config.database_url
        return
    if lock.is_held_elsewhere():
        conninfo = running_conninfo(config.postgres_dir)
        if conninfo is None:
            raise ConfigError("the running homeserver's database is not reachable")
        yield conninfo
        return
    lock.acquire()
    try:
        with app.database_conninfo(config) as conninfo:
            yield conninfo
    finally:
        lock.release()


async def _register(config: Config, conninfo: str, args: argparse.Namespace) -> str:
    db = Database(conninfo, size=1)
    await db.open()
    try:
        passwords = Passwords(config.argon2_time_cost, memory_cost=config.argon2_memory_cost)
        accounts = AccountService(db, config.server_name, passwords)
        return await accounts.register_user(args.user, args.password, admin=args.admin)
    finally:
        await db.close()


async def _registration_token(conninfo: str, args: argparse.Namespace) -> list[str]:
    """Run a `registration-token` subcommand; the lines to print."""
    db = Database(conninfo, size=1)
    await db.open()
    tokens = RegistrationTokens(db)
    try:
        if args.token_command == "create":
            created = await tokens.create_token(
                token=args.token, uses_allowed=args.uses, expiry_time=args.expiry_ms
            )
            return [created["token"]]
        if args.token_command == "delete":
            await tokens.delete_token(args.token)
            return [f"deleted {args.token}"]
        return [
            f"{t['token']}\tuses_allowed={t['uses_allowed']} pending={t['pending']}"
            f" completed={t['completed']} expiry_time={t['expiry_time']}"
            for t in await tokens.list_tokens()
        ]
    finally:
        await db.close()


def _rotate_key(config: Config) -> int:
    """A running server would go on signing with the key it holds, now published as
    expired: its peers would refuse what it sends. So it must be stopped."""
    lock = DataDirLock(config.data_dir)
    lock.acquire()
    try:
        old, new = rotate_signing_key(config.data_dir, config.signing_key_file, now_ms())
    finally:
        lock.release()
    print(f"signing with {new} from the next start; {old} is retired (kept published)")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ)
    config = resolve_config(args, environ)
    setup_logging(config.log_level, config.log_format)
    if args.command == "generate-config":
        print(f"data directory ready: {config.data_dir}")
        return 0
    if args.command == "run":
        app.run(config)
        return 0
    if args.command == "rotate-key":
        return _rotate_key(config)
    if args.command == "restore" and DataDirLock(config.data_dir).is_held_elsewhere():
        raise ConfigError("stop the server before restoring a backup")
    with _database_for_tool(config) as conninfo:
        if args.command == "backup":
            backup.backup(config, conninfo, args.dir)
            print(f"backed up {config.server_name} to {args.dir}")
            return 0
        if args.command == "restore":
            backup.restore(config, conninfo, args.dir)
            app.prepare_database(conninfo)
            print(f"restored {config.server_name} from {args.dir}")
            return 0
        app.prepare_database(conninfo)
        if args.command == "migrate":
            from homeserver.storage.core import migrations  # alembic: not for `run`

            print(f"database at revision {migrations.current_revision(conninfo)}")
            return 0
        if args.command == "registration-token":
            for line in asyncio.run(_registration_token(conninfo, args)):
                print(line)
            return 0
        user_id = asyncio.run(_register(config, conninfo, args))
        print(f"registered {user_id}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = _main(argv)
    except (ConfigError, EmbeddedPostgresError) as exc:
        print(f"homeserver: error: {exc}", file=sys.stderr)
        code = 1
    except ServiceError as exc:
        print(f"homeserver: error: {exc} ({exc.errcode})", file=sys.stderr)
        code = 1
    except OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"homeserver: error: database: {first}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
