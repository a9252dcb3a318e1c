"""A message that notifies most of a big room plainly (["notify"], no highlight) is
stored once for the room, not once per member: `event_push_room_actions` holds the
room's row (its thread, and the local members it does not notify: the sender, those
ignoring the sender, those whose own rules give another outcome, who get rows of
their own in `event_push_actions` when notified). Who was in the room then comes from
`push_member_spans`: per local user and room, the stream positions between which
they were joined. A member's actions are their own rows and the room rows inside
their spans that do not exclude them.

Spans start with the local users joined now (the `users` table tells local ones).

Revision ID: 0035
Revises: 0034
"""

from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_push_room_actions (
            room_id         TEXT NOT NULL,
            stream_ordering BIGINT NOT NULL,
            thread_id       TEXT,
            excluded        TEXT[] NOT NULL,
            PRIMARY KEY (room_id, stream_ordering)
        );

        CREATE TABLE push_member_spans (
            user_id   TEXT NOT NULL,
            room_id   TEXT NOT NULL,
            joined_at BIGINT NOT NULL,
            left_at   BIGINT,
            PRIMARY KEY (user_id, room_id, joined_at)
        );
        CREATE UNIQUE INDEX push_member_spans_open ON push_member_spans (room_id, user_id)
            WHERE left_at IS NULL;

        INSERT INTO push_member_spans (user_id, room_id, joined_at)
            SELECT m.user_id, m.room_id, m.stream_ordering FROM room_memberships m
            JOIN users u ON u.user_id = m.user_id WHERE m.membership = 'join';
        """
    )


def downgrade() -> None:
    # Room rows become the per-member rows they stand for, then the tables go.
    op.execute(
        """
        INSERT INTO event_push_actions (user_id, stream_ordering, room_id, thread_id,
                                        actions, highlight)
            SELECT s.user_id, r.stream_ordering, r.room_id, r.thread_id, NULL, FALSE
            FROM event_push_room_actions r JOIN push_member_spans s ON s.room_id = r.room_id
            AND r.stream_ordering > s.joined_at
            AND (s.left_at IS NULL OR r.stream_ordering < s.left_at)
            WHERE NOT s.user_id = ANY(r.excluded)
            ON CONFLICT DO NOTHING;
        DROP TABLE push_member_spans;
        DROP TABLE event_push_room_actions;
        """
    )
