"""Stream positions that readers can trust across processes.

Positions come from a counter row per stream, and each position stays registered
in `stream_inflight` until the transaction that uses it commits. A reader may
advance to min(counter, lowest in-flight position - 1): every position at or below
that is committed, so no event is skipped however commits interleave.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE stream_positions (
            stream   TEXT PRIMARY KEY,
            position BIGINT NOT NULL
        );
        INSERT INTO stream_positions (stream, position) VALUES
            ('events', 0), ('account_data', 0), ('receipts', 0), ('to_device', 0),
            ('device_lists', 0), ('presence', 0);

        -- Lost on a crash, which is right: nothing is in flight after one.
        CREATE UNLOGGED TABLE stream_inflight (
            stream      TEXT NOT NULL,
            position    BIGINT NOT NULL,
            backend_pid INTEGER NOT NULL,
            PRIMARY KEY (stream, position)
        );
        """
    )
