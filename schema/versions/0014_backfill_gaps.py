"""Holes in a room's timeline that backfill may fill.

A row says: this timeline event cites a prev event that is not in our timeline
(unknown, or held only as an outlier). That is where our copy of the history has a
hole: before our join, or in the middle of the timeline where an incoming event's
missing prev events were bridged with the state at the gap instead of being fetched.
/messages backfills from other servers when a page reaches such an event. A gap that
nobody could fill is retried only after `retry_after`, later with each failure, so
pages do not wait on it again and again. A row goes when its prev event joins the
timeline (or is rejected or soft-failed: backfill cannot change those).

Existing holes are found once here, from the events and their edges.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE backfill_gaps (
            room_id       TEXT NOT NULL,
            event_id      TEXT NOT NULL,
            prev_event_id TEXT NOT NULL,
            attempts      INTEGER NOT NULL DEFAULT 0,
            retry_after   TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
            PRIMARY KEY (event_id, prev_event_id)
        );
        CREATE INDEX backfill_gaps_room ON backfill_gaps (room_id, retry_after);
        CREATE INDEX backfill_gaps_prev ON backfill_gaps (prev_event_id);

        INSERT INTO backfill_gaps (room_id, event_id, prev_event_id)
        SELECT e.room_id, e.event_id, p.prev_event_id FROM events e
        JOIN event_edges p USING (event_id)
        LEFT JOIN events pe ON pe.event_id = p.prev_event_id
        WHERE e.stream_ordering IS NOT NULL AND e.state_group IS NOT NULL
          AND e.rejected_reason IS NULL AND NOT e.soft_failed
          AND (pe.event_id IS NULL OR (pe.state_group IS NULL AND pe.rejected_reason IS NULL));
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE backfill_gaps")
