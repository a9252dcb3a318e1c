"""Extended profile fields: any namespaced key a user sets on their profile.

`displayname` and `avatar_url` keep their columns (membership events and the user
directory read them); every other field lives in one `jsonb` object per user, whose
keys are the field names and values any JSON the user gave.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE profiles ADD COLUMN fields JSONB NOT NULL DEFAULT '{}'::jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE profiles DROP COLUMN fields")
