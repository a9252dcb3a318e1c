"""Users' push rules: their own rules, and their changes to server-default rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class PushRuleRow:
    user_id: str
    kind: str
    rule_id: str
    is_default: bool
    priority: int
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any] | None
    enabled: bool | None


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=lambda o: orjson.dumps(o).decode())


_COLUMNS = "user_id, kind, rule_id, is_default, priority, conditions, pattern, actions, enabled"


async def rules_of_users(conn: AsyncConnection, user_ids: Sequence[str]) -> list[PushRuleRow]:
    """Every stored row of these users, user rules of a kind most important first."""
    if not user_ids:
        return []
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM push_rules WHERE user_id = ANY(%s)"
        " ORDER BY user_id, kind, priority DESC, rule_id",
        (list(user_ids),),
    )
    return [PushRuleRow(*row) for row in await cur.fetchall()]


async def upsert_user_rule(conn: AsyncConnection, row: PushRuleRow) -> None:
    """Create or replace one of the user's own rules (enabled again, as the spec says)."""
    await conn.execute(
        f"INSERT INTO push_rules ({_COLUMNS}) VALUES (%s, %s, %s, FALSE, %s, %s, %s, %s, TRUE)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET priority = EXCLUDED.priority,"
        " conditions = EXCLUDED.conditions, pattern = EXCLUDED.pattern,"
        " actions = EXCLUDED.actions, enabled = TRUE",
        (
            row.user_id,
            row.kind,
            row.rule_id,
            row.priority,
            _jsonb(row.conditions),
            row.pattern,
            _jsonb(row.actions),
        ),
    )


async def set_priorities(
    conn: AsyncConnection, user_id: str, kind: str, ordered: Sequence[str]
) -> None:
    """Renumber the user's rules of a kind: the first id is the most important."""
    count = len(ordered)
    await conn.cursor().executemany(
        "UPDATE push_rules SET priority = %s"
        " WHERE user_id = %s AND kind = %s AND rule_id = %s AND NOT is_default",
        [(count - i, user_id, kind, rule_id) for i, rule_id in enumerate(ordered)],
    )


async def delete_user_rule(conn: AsyncConnection, user_id: str, kind: str, rule_id: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM push_rules WHERE user_id = %s AND kind = %s AND rule_id = %s"
        " AND NOT is_default",
        (user_id, kind, rule_id),
    )
    return cur.rowcount > 0


async def set_enabled(
    conn: AsyncConnection, user_id: str, kind: str, rule_id: str, enabled: bool, is_default: bool
) -> None:
    """Enable or disable a rule; for a server-default rule this records the change."""
    await conn.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, is_default, enabled)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = EXCLUDED.enabled",
        (user_id, kind, rule_id, is_default, enabled),
    )


async def set_actions(
    conn: AsyncConnection,
    user_id: str,
    kind: str,
    rule_id: str,
    actions: list[Any],
    is_default: bool,
) -> None:
    await conn.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, is_default, actions)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = EXCLUDED.actions",
        (user_id, kind, rule_id, is_default, _jsonb(actions)),
    )
