"""Push delivery: when to retry a failing push gateway, and an index for pruning old
push actions.

`pushers.retry_at` is when the next attempt may go (NULL: now); with `failing_since`
(when the current run of failures began) it is the pusher's backoff, kept in the
database so that every worker process and a restart honour it. A BRIN index on
`event_push_actions.stream_ordering` lets the retention task read old rows by range
at almost no cost to the inserts of the send path (stream orderings grow with the
table, so block ranges summarise them well).

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE pushers ADD COLUMN retry_at BIGINT;
        CREATE INDEX event_push_actions_stream ON event_push_actions
            USING brin (stream_ordering);
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX event_push_actions_stream; ALTER TABLE pushers DROP COLUMN retry_at;")
