"""An index of the users each ignore list names, so that storing a message can find,
in one cheap look-up, the members who ignore its sender (no notification for them).

Revision ID: 0023
Revises: 0022
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX account_data_ignored_users_idx ON account_data"
        " USING gin ((content -> 'ignored_users'))"
        " WHERE room_id = '' AND type = 'm.ignored_user_list'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX account_data_ignored_users_idx")
