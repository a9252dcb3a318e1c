"""Federation, part 1 continued: the stripped state that comes with a remote invite
or knock (we hold no state of such a room, so sync has nowhere else to read it from),
and the positions of events backfilled from other servers.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- What the inviting (or knocked-on) server told us about the room, as stripped
        -- state events, for the invite_state/knock_state of the user's sync; one row per
        -- membership event, replaced by a later invite or knock of the same user.
        CREATE TABLE invite_stripped_state (
            room_id  TEXT NOT NULL,
            user_id  TEXT NOT NULL,
            event_id TEXT NOT NULL,
            state    JSONB NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );

        -- Backfilled events get negative stream orderings (-1, -2, ... from this
        -- sequence): they take their place in /messages by depth, and never appear in
        -- an incremental sync, whose positions are positive.
        CREATE SEQUENCE backfill_ordering;
        """
    )
