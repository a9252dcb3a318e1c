"""Cross-signing keys of local users, and the signatures users add to keys."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class CrossSigningKeyRow:
    user_id: str
    key_type: str  # master, self_signing or user_signing
    key_id: str
    key_json: str


@dataclass(frozen=True, slots=True)
class SignatureRow:
    target_user_id: str
    target_key_id: str
    signer_user_id: str
    signer_key_id: str
    signature: str


async def get_keys(
    conn: AsyncConnection, user_ids: list[str], key_types: list[str]
) -> list[CrossSigningKeyRow]:
    cur = await conn.execute(
        "SELECT user_id, key_type, key_id, key_json FROM e2e_cross_signing_keys"
        " WHERE user_id = ANY(%s) AND key_type = ANY(%s)",
        (user_ids, key_types),
    )
    return [CrossSigningKeyRow(*row) for row in await cur.fetchall()]


async def set_key(
    conn: AsyncConnection, user_id: str, key_type: str, key_id: str, key_json: str
) -> None:
    await conn.execute(
        "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, key_type)"
        " DO UPDATE SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,"
        # A new key closes any window for replacing the old one without re-authentication.
        " updatable_without_uia_before_ms = CASE"
        " WHEN e2e_cross_signing_keys.key_id = EXCLUDED.key_id"
        " THEN e2e_cross_signing_keys.updatable_without_uia_before_ms END",
        (user_id, key_type, key_id, key_json),
    )


async def open_master_replacement_window(
    conn: AsyncConnection, user_id: str, until_ms: int
) -> bool:
    """Let `user_id` replace their master key without re-authenticating until `until_ms`;
    False when they have no master key."""
    cur = await conn.execute(
        "UPDATE e2e_cross_signing_keys SET updatable_without_uia_before_ms = %s"
        " WHERE user_id = %s AND key_type = 'master'",
        (until_ms, user_id),
    )
    return cur.rowcount > 0


async def master_replacement_window(conn: AsyncConnection, user_id: str) -> int | None:
    """When the window for replacing `user_id`'s master key without re-authentication
    ends (None: no window was opened for the current key)."""
    cur = await conn.execute(
        "SELECT updatable_without_uia_before_ms FROM e2e_cross_signing_keys"
        " WHERE user_id = %s AND key_type = 'master'",
        (user_id,),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def add_signatures(conn: AsyncConnection, rows: list[SignatureRow]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id,"
            " signer_key_id, signature) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
            " DO UPDATE SET signature = EXCLUDED.signature",
            [
                (r.target_user_id, r.target_key_id, r.signer_user_id, r.signer_key_id, r.signature)
                for r in rows
            ],
        )


async def signatures_on(
    conn: AsyncConnection, target_user_ids: list[str], viewer: str
) -> list[SignatureRow]:
    """Signatures on these users' keys that `viewer` may see: those the key owners made,
    and those the viewer made (a user-signing signature is the signer's business only)."""
    cur = await conn.execute(
        "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
        " FROM e2e_signatures WHERE target_user_id = ANY(%s)"
        " AND (signer_user_id = target_user_id OR signer_user_id = %s)",
        (target_user_ids, viewer),
    )
    return [SignatureRow(*row) for row in await cur.fetchall()]


async def delete_signatures_by(conn: AsyncConnection, user_id: str, signer_key_id: str) -> None:
    """Forget what a replaced key of `user_id` had signed."""
    await conn.execute(
        "DELETE FROM e2e_signatures WHERE signer_user_id = %s AND signer_key_id = %s",
        (user_id, signer_key_id),
    )
