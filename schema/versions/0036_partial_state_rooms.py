"""Rooms joined with partial state (MSC3706): our copy of the room lacks most member
events until the full state is fetched in the background. The row outlives a restart,
so the fetch resumes; `servers` are the resident's `servers_in_room`, where our events
go while we cannot tell the room's servers from its members. `full_at` is the events
stream position at which the full state came in (NULL while partial): a /sync that
does not lazy-load members then sends the room's whole state.

Revision ID: 0036
Revises: 0035
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE partial_state_rooms ("
        " room_id TEXT PRIMARY KEY REFERENCES rooms (room_id) ON DELETE CASCADE,"
        " join_event_id TEXT NOT NULL,"
        " joined_via TEXT NOT NULL,"
        " servers TEXT[] NOT NULL,"
        " since_ts BIGINT NOT NULL,"
        " full_at BIGINT)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE partial_state_rooms")
