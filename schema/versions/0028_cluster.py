"""Rate-limit buckets shared by every process on the database, so that a client
flooding through several processes behind a load balancer is limited as through one.

Unlogged: a bucket is worth nothing after a crash (it starts full again), and the
write-ahead log need not carry one update per limited request.

Revision ID: 0028
Revises: 0022
"""

from alembic import op

revision = "0028"
down_revision = "0022"
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


def downgrade() -> None:
    op.execute("DROP TABLE rate_limit_buckets")
