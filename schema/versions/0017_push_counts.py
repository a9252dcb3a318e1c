"""Unread notification counts kept per (user, room, thread), so that sync reads one
row per room and thread instead of every unread push action.

A row says: `notifications` and `highlights` are the user's push actions in the room
and thread (thread_id 'main' for the main timeline) after stream position
`read_up_to`. Inserting push actions adds to it; sync compares `read_up_to` with
where the user has read up to now (receipts, join) and recounts when they differ
(a new receipt, older or newer), or when `read_up_to` is -1 (unknown: set here for
existing data, and by pruning).

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_push_summary (
            user_id       TEXT NOT NULL,
            room_id       TEXT NOT NULL,
            thread_id     TEXT NOT NULL,
            read_up_to    BIGINT NOT NULL,
            notifications BIGINT NOT NULL,
            highlights    BIGINT NOT NULL,
            PRIMARY KEY (user_id, room_id, thread_id)
        );
        INSERT INTO event_push_summary
            SELECT DISTINCT user_id, room_id, COALESCE(thread_id, 'main'), -1, 0, 0
            FROM event_push_actions;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_push_summary;")
