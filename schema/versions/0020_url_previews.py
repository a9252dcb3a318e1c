"""The link-preview cache (`/media/preview_url`): one row per URL with its latest
preview, or the fetch failure, and when it expires.

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE url_previews (
            url        TEXT PRIMARY KEY,
            fetched_ts BIGINT NOT NULL,
            expires_ts BIGINT NOT NULL,
            preview    JSONB,
            errcode    TEXT,
            error      TEXT
        );
        CREATE INDEX url_previews_expires ON url_previews (expires_ts);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE url_previews;")
