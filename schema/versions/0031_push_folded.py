"""Unread counts are folded into `event_push_summary` when they are read, not on every
send: a message into a room of a thousand members would otherwise update a thousand
summary rows. `event_push_folded` holds, per user and room, the stream position up to
which the room's push actions are in the user's summaries; actions after it are
counted from `event_push_actions` and folded by the next read. Summaries written
until now are complete, so they start folded up to the end of the stream.

Revision ID: 0031
Revises: 0030
"""

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_push_folded (
            user_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            up_to   BIGINT NOT NULL,
            PRIMARY KEY (user_id, room_id)
        );
        INSERT INTO event_push_folded
            SELECT DISTINCT user_id, room_id,
                (SELECT COALESCE(max(stream_ordering), 0) FROM events)
            FROM event_push_summary;
        """
    )


def downgrade() -> None:
    # The old send path keeps summaries whole: have every one recounted once.
    op.execute("UPDATE event_push_summary SET read_up_to = -1; DROP TABLE event_push_folded;")
