"""The media repository: uploaded and cached remote files, and their thumbnails.

The bytes live on disk under the data directory's `media/`, named by their SHA-256
(so that a file uploaded twice is stored once); these tables say which media ids name
which bytes, who uploaded them and how to serve them.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- One row per mxc:// URI we can serve: our users' uploads (origin is our server
        -- name) and remote media fetched for our users (uploader is NULL). An id made by
        -- POST /media/v1/create has no content yet: sha256 and uploaded_ts are NULL until
        -- its PUT, and it is forgotten after expires_ts.
        CREATE TABLE media (
            origin       TEXT NOT NULL,
            media_id     TEXT NOT NULL,
            uploader     TEXT,
            content_type TEXT,
            filename     TEXT,
            size         BIGINT,
            sha256       TEXT,
            created_ts   BIGINT NOT NULL,
            uploaded_ts  BIGINT,
            expires_ts   BIGINT,
            PRIMARY KEY (origin, media_id),
            CHECK ((sha256 IS NULL) = (uploaded_ts IS NULL)),
            CHECK ((sha256 IS NULL) = (size IS NULL))
        );
        -- Counting a user's pending async uploads (the spec asks for a limit).
        CREATE INDEX media_pending ON media (uploader) WHERE uploaded_ts IS NULL;

        -- Thumbnails generated on demand, kept so that each is generated once.
        CREATE TABLE media_thumbnails (
            origin       TEXT NOT NULL,
            media_id     TEXT NOT NULL,
            width        INTEGER NOT NULL,
            height       INTEGER NOT NULL,
            method       TEXT NOT NULL CHECK (method IN ('crop', 'scale')),
            animated     BOOLEAN NOT NULL,
            content_type TEXT NOT NULL,
            size         BIGINT NOT NULL,
            sha256       TEXT NOT NULL,
            created_ts   BIGINT NOT NULL,
            PRIMARY KEY (origin, media_id, width, height, method, animated),
            FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE
        );
        """
    )
