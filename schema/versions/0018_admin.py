"""Rooms a server admin has blocked: nobody on this server may join them again, even
after the room itself was purged from the database.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE blocked_rooms (
            room_id    TEXT PRIMARY KEY,
            blocked_by TEXT NOT NULL,
            created_ts BIGINT NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE blocked_rooms;")
