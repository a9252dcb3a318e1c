"""`room_memberships_user` widened from (user_id, membership) to (user_id, membership,
room_id). A lookup by (room_id, user_id) that also tests `membership` tied, on a
database never analysed (this deployment's PostgreSQL runs without autovacuum), between
the primary key and the narrower index, and the planner could pick the latter, reading
all the user's rooms per lookup. With room_id in it, the index answers such a lookup
by its key too, and "rooms of U" lists them without visiting the table for room_id.

Revision ID: 0038
Revises: 0037
"""

from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain, not CONCURRENTLY: alembic runs each migration in a transaction.
    op.execute(
        """
        CREATE INDEX room_memberships_user_room
            ON room_memberships (user_id, membership, room_id);
        DROP INDEX room_memberships_user;
        ALTER INDEX room_memberships_user_room RENAME TO room_memberships_user;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE INDEX room_memberships_user_narrow ON room_memberships (user_id, membership);
        DROP INDEX room_memberships_user;
        ALTER INDEX room_memberships_user_narrow RENAME TO room_memberships_user;
        """
    )
