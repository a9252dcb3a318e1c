"""Media policy: authenticated media, per-user upload limits and retention.

Media stored while `enable_authenticated_media` is on is marked `authenticated` and is
then served only on the authenticated endpoints, as Synapse does; older media keeps
its legacy unauthenticated URLs working. Summing a user's recent uploads for
`media_upload_limits` reads the uploader index. `last_access_ts` is when the media was
last served (NULL: not since it was stored), written at most once an hour per item, for
`media_retention`.

Revision ID: 0033
Revises: 0032
"""

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE media ADD COLUMN authenticated BOOLEAN NOT NULL DEFAULT false")
    op.execute("ALTER TABLE media ADD COLUMN last_access_ts BIGINT")
    op.execute(
        "CREATE INDEX media_uploader_recent ON media (uploader, uploaded_ts)"
        " WHERE uploader IS NOT NULL AND uploaded_ts IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX media_uploader_recent")
    op.execute("ALTER TABLE media DROP COLUMN authenticated")
    op.execute("ALTER TABLE media DROP COLUMN last_access_ts")
