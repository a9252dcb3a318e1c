"""Foundation: server metadata and user accounts.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE server_metadata (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE users (
            user_id       TEXT PRIMARY KEY,
            password_hash TEXT,
            is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
            is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
            deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
            created_ts    BIGINT NOT NULL
        );
        """
    )
