"""One-time keys remember the order they were uploaded in, so that /keys/claim hands
out the oldest first (clients discard the private halves of their oldest keys first).
Keys already stored are numbered in no particular order.

Revision ID: 0022
Revises: 0021
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE e2e_one_time_keys ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY")


def downgrade() -> None:
    op.execute("ALTER TABLE e2e_one_time_keys DROP COLUMN seq")
