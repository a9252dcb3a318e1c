"""Indexes that carry the timeline condition, so that reads of a room's history do
not depend on the planner's row estimates.

Every read of the timeline (pages of /messages, relations, threads) asks for events
with a stream ordering, not rejected and not soft-failed, and relation reads also
for unredacted ones. With that condition only in the query, a room that grew since
the last ANALYZE (or a database whose autovacuum is off) got plans that read every
event of the room and sorted them, or intersected a lookup of a few relations with
a bitmap of the whole room, for each page. With the condition in the index, a page
is one index scan of `limit` entries and a relation lookup one probe per event,
whatever the statistics say. The transaction ids of a page are looked up by event.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TIMELINE = "stream_ordering IS NOT NULL AND rejected_reason IS NULL AND NOT soft_failed"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE INDEX events_timeline ON events (room_id, depth, stream_ordering)
            WHERE {TIMELINE};
        DROP INDEX events_room_depth;

        DROP INDEX events_relations;
        CREATE INDEX events_relations ON events (relates_to, rel_type)
            WHERE relates_to IS NOT NULL AND {TIMELINE} AND redacted_by IS NULL;

        DROP INDEX events_room_threads;
        CREATE INDEX events_room_threads ON events (room_id, relates_to)
            WHERE rel_type = 'm.thread' AND {TIMELINE} AND redacted_by IS NULL;

        -- A page of history looks up the reader's transaction ids by event: without
        -- this, by the (user, device) prefix of the key, every send the device ever
        -- made was read for each page. Unique: a send creates one event.
        CREATE UNIQUE INDEX event_txn_ids_event ON event_txn_ids (event_id);
        """
    )
