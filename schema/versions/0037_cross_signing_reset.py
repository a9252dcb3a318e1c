"""A window in which a user may replace their master cross-signing key without
re-authenticating, opened by an admin (Synapse's
`_allow_cross_signing_replacement_without_uia`). Kept on the master key's row, so every
process reads the same window and replacing the key closes it.

Revision ID: 0037
Revises: 0036
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE e2e_cross_signing_keys ADD COLUMN updatable_without_uia_before_ms BIGINT"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE e2e_cross_signing_keys DROP COLUMN updatable_without_uia_before_ms")
