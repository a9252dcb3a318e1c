"""Application services: where delivery to each one stands.

One row per application service (by its registration `id`). `last_stream_ordering` is
the last event handed over (or passed by); `next_txn_id` names the next transaction.
The transaction in flight is recorded before it is sent (`pending_txn_id`, its event
ids and the position it reaches), so a retry, even after a restart, sends the same
events under the same txnId and the AS can drop what it already took.
`failing_since`/`retry_at` are the backoff, shared by every worker process.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE appservice_delivery (
            as_id                TEXT PRIMARY KEY,
            last_stream_ordering BIGINT NOT NULL,
            next_txn_id          BIGINT NOT NULL DEFAULT 1,
            pending_txn_id       BIGINT,
            pending_event_ids    TEXT[],
            pending_up_to        BIGINT,
            failing_since        BIGINT,
            retry_at             BIGINT
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE appservice_delivery;")
