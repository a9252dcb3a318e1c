"""Thumbnails of another server's media may be kept without its full file: they are
fetched from the origin's federation thumbnail endpoint, so the media they belong to
has no row here unless it was downloaded too.

Revision ID: 0030
Revises: 0029
"""

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE media_thumbnails DROP CONSTRAINT media_thumbnails_origin_media_id_fkey")


def downgrade() -> None:
    op.execute(
        "DELETE FROM media_thumbnails t WHERE NOT EXISTS"
        " (SELECT 1 FROM media m WHERE m.origin = t.origin AND m.media_id = t.media_id)"
    )
    op.execute(
        "ALTER TABLE media_thumbnails ADD CONSTRAINT media_thumbnails_origin_media_id_fkey"
        " FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE"
    )
