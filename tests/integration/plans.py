"""The plans PostgreSQL actually ran, taken from auto_explain, and the rows their
nodes over one table read: counted, not timed, so a plan that reads all of a user's
rooms per room fails a test on any machine load."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.errors import Diagnostic


def rows_read(plan: dict[str, Any], relations: tuple[str, ...]) -> int:
    """Rows the plan's nodes over `relations` read (returned or filtered out), over
    all their loops, subplans included."""
    loops = plan.get("Actual Loops", 1)
    read = 0
    if plan.get("Relation Name") in relations:
        kept = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        read = kept * loops
    return read + sum(rows_read(child, relations) for child in plan.get("Plans", []))


async def explained(
    conninfo: str, read: Callable[[AsyncConnection], Awaitable[Any]], *relations: str
) -> list[int]:
    """Run `read` with auto_explain reporting each statement's executed plan; the rows
    of `relations` each plan read, in the order the statements ran."""
    plans: list[dict[str, Any]] = []

    def keep(diagnostic: Diagnostic) -> None:
        text = diagnostic.message_primary or ""
        if "plan:" in text:
            plans.append(orjson.loads(text.split("plan:", 1)[1])["Plan"])

    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
            " SET auto_explain.log_analyze = on; SET auto_explain.log_format = json;"
            " SET auto_explain.log_level = notice"
        )
        conn.add_notice_handler(keep)
        await read(conn)
    return [rows_read(plan, relations) for plan in plans]


async def never_analyzed(conn: AsyncConnection, relation: str) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname = %s"
        " AND last_analyze IS NULL AND last_autoanalyze IS NULL",
        (relation,),
    )
    return await cur.fetchone() == (1,)
