"""Moderation and operations from the admin API: accounts shadow-banned, suspended
(read but not send) or locked (no login, no session), per-user rate-limit overrides,
reports of users, quarantined and protected media, the server-notices room of each user.

Revision ID: 0029
Revises: 0028
"""

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE users
            ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE,
            ADD COLUMN suspended     BOOLEAN NOT NULL DEFAULT FALSE,
            ADD COLUMN locked        BOOLEAN NOT NULL DEFAULT FALSE;

        -- Synapse's override_ratelimit: 0/0 means not limited at all.
        CREATE TABLE ratelimit_overrides (
            user_id             TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
            messages_per_second DOUBLE PRECISION NOT NULL,
            burst_count         INTEGER NOT NULL
        );

        -- Users reported to the server's admins (the client's POST /users/{userId}/report).
        CREATE TABLE user_reports (
            id             BIGSERIAL PRIMARY KEY,
            target_user_id TEXT NOT NULL,
            user_id        TEXT NOT NULL,
            reason         TEXT NOT NULL,
            received_ts    BIGINT NOT NULL
        );
        CREATE INDEX user_reports_target ON user_reports (target_user_id, received_ts);

        -- When a destination started failing (Synapse's failure_ts), for the admin API.
        ALTER TABLE destinations ADD COLUMN failure_ts BIGINT;

        -- Quarantined media is served to nobody; protected media cannot be quarantined.
        ALTER TABLE media
            ADD COLUMN quarantined_by       TEXT,
            ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
        CREATE INDEX media_uploader ON media (uploader, created_ts) WHERE uploader IS NOT NULL;

        -- Each user's server-notices room.
        CREATE TABLE server_notice_rooms (
            user_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE server_notice_rooms;
        DROP INDEX media_uploader;
        ALTER TABLE media DROP COLUMN quarantined_by, DROP COLUMN safe_from_quarantine;
        ALTER TABLE destinations DROP COLUMN failure_ts;
        DROP TABLE user_reports;
        DROP TABLE ratelimit_overrides;
        ALTER TABLE users DROP COLUMN shadow_banned, DROP COLUMN suspended, DROP COLUMN locked;
        """
    )
