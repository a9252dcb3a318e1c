"""State that every process behind a load balancer must share.

Rate-limit buckets, so that a client flooding through several processes is limited as
through one. Unlogged: a bucket is worth nothing after a crash (it starts full again),
and the write-ahead log need not carry one update per limited request.

Room deletions scheduled by admins: their status, polled through any process, and
their parameters, for another process to finish one whose process died. At most one
unfinished deletion per room.

Answers to other servers' transactions, so that one retried through another process
is answered the same and its EDUs are not handled twice (kept a day).

Deactivated users, indexed, for the sweep each process runs every few seconds to take
up the leaves of a deactivation whose process died.

Revision ID: 0028
Revises: 0027
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE UNLOGGED TABLE rate_limit_buckets (
            action TEXT NOT NULL,
            key TEXT NOT NULL,
            tokens DOUBLE PRECISION NOT NULL,
            updated_ms BIGINT NOT NULL,
            allowed BOOLEAN NOT NULL,
            PRIMARY KEY (action, key)
        )
        """
    )
    op.execute("CREATE INDEX rate_limit_buckets_updated ON rate_limit_buckets (updated_ms)")
    op.execute(
        """
        CREATE TABLE room_deletions (
            delete_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            admin_id TEXT NOT NULL,
            request JSONB NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            kicked_users JSONB NOT NULL,
            failed_to_kick_users JSONB NOT NULL,
            local_aliases JSONB NOT NULL,
            created_ts BIGINT NOT NULL,
            finished_ts BIGINT
        )
        """
    )
    op.execute("CREATE INDEX room_deletions_room ON room_deletions (room_id)")
    op.execute(
        "CREATE UNIQUE INDEX room_deletions_unfinished ON room_deletions (room_id)"
        " WHERE status IN ('scheduled', 'active')"
    )
    op.execute("CREATE INDEX room_deletions_finished ON room_deletions (finished_ts)")
    op.execute("CREATE INDEX users_deactivated ON users (user_id) WHERE deactivated")
    op.execute(
        """
        CREATE TABLE federation_inbound_transactions (
            origin TEXT NOT NULL,
            txn_id TEXT NOT NULL,
            response JSONB NOT NULL,
            received_ts BIGINT NOT NULL,
            PRIMARY KEY (origin, txn_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX federation_inbound_transactions_ts"
        " ON federation_inbound_transactions (received_ts)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE federation_inbound_transactions")
    op.execute("DROP INDEX users_deactivated")
    op.execute("DROP TABLE room_deletions")
    op.execute("DROP TABLE rate_limit_buckets")
