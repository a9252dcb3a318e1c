"""OpenID tokens (the proof of identity widgets and Element Call's token service check
over federation) and delayed events (MSC4140: events the server sends later on the
user's behalf, such as the leave of a call member whose client vanished).

Revision ID: 0025
Revises: 0024
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE openid_tokens (
            token_hash BYTEA PRIMARY KEY,
            user_id TEXT NOT NULL,
            expires_ts BIGINT NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts)")
    op.execute(
        """
        CREATE TABLE delayed_events (
            delay_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            state_key TEXT,
            content JSONB NOT NULL,
            delay_ms BIGINT NOT NULL,
            running_since BIGINT NOT NULL,
            send_ts BIGINT NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX delayed_events_due ON delayed_events (send_ts)")
    # A device's retransmitted request (same path, same txn id) gets the first answer.
    op.execute(
        """
        CREATE TABLE delayed_event_txn_ids (
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            txn_id TEXT NOT NULL,
            delay_id TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id, scope, txn_id)
        )
        """
    )
    op.execute("CREATE INDEX delayed_events_user ON delayed_events (user_id, room_id)")
    op.execute(
        "CREATE INDEX delayed_events_state ON delayed_events (room_id, event_type, state_key)"
        " WHERE state_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE delayed_event_txn_ids")
    op.execute("DROP TABLE delayed_events")
    op.execute("DROP TABLE openid_tokens")
