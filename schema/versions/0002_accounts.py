"""Accounts: devices, tokens, user-interactive auth, profiles, account data, filters.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _devices_and_tokens()
    _interactive_auth_and_registration()
    _profiles_and_account_data()


def _devices_and_tokens() -> None:
    """The erased flag of accounts, devices, and the access, refresh and login tokens."""
    op.execute(
        """
        ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;

        CREATE TABLE devices (
            user_id              TEXT NOT NULL REFERENCES users (user_id),
            device_id            TEXT NOT NULL,
            display_name         TEXT,
            created_ts           BIGINT NOT NULL,
            last_seen_ts         BIGINT,
            last_seen_ip         TEXT,
            last_seen_user_agent TEXT,
            PRIMARY KEY (user_id, device_id)
        );

        -- Tokens are stored as SHA-256 digests: a database dump grants no sessions.
        CREATE TABLE refresh_tokens (
            id            BIGSERIAL PRIMARY KEY,
            token_hash    BYTEA NOT NULL UNIQUE,
            user_id       TEXT NOT NULL,
            device_id     TEXT NOT NULL,
            created_ts    BIGINT NOT NULL,
            expires_ts    BIGINT,
            -- set when this token was exchanged; the old pair dies when the new one is used
            next_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE
        );

        CREATE TABLE access_tokens (
            id               BIGSERIAL PRIMARY KEY,
            token_hash       BYTEA NOT NULL UNIQUE,
            user_id          TEXT NOT NULL REFERENCES users (user_id),
            device_id        TEXT NOT NULL,
            created_ts       BIGINT NOT NULL,
            expires_ts       BIGINT,
            refresh_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE,
            used             BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

        -- Every process caches validated tokens; a deleted token is evicted everywhere.
        CREATE FUNCTION notify_access_token_deleted() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('homeserver_tokens', encode(OLD.token_hash, 'hex'));
            RETURN OLD;
        END
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER access_tokens_deleted AFTER DELETE ON access_tokens
            FOR EACH ROW EXECUTE FUNCTION notify_access_token_deleted();
        CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

        CREATE TABLE login_tokens (
            token_hash BYTEA PRIMARY KEY,
            user_id    TEXT NOT NULL REFERENCES users (user_id),
            expires_ts BIGINT NOT NULL
        );
        """
    )


def _interactive_auth_and_registration() -> None:
    """User-interactive auth sessions and registration tokens."""
    op.execute(
        """
        CREATE TABLE uia_sessions (
            session_id   TEXT PRIMARY KEY,
            created_ts   BIGINT NOT NULL,
            expires_ts   BIGINT NOT NULL,
            -- the request the session authorises: method, path and a digest of the body
            request_key  TEXT NOT NULL,
            user_id      TEXT,
            completed    JSONB NOT NULL DEFAULT '[]',
            data         JSONB NOT NULL DEFAULT '{}'
        );
        CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ts);

        CREATE TABLE registration_tokens (
            token         TEXT PRIMARY KEY,
            uses_allowed  INTEGER,
            pending       INTEGER NOT NULL DEFAULT 0,
            completed     INTEGER NOT NULL DEFAULT 0,
            expiry_time   BIGINT
        );
        """
    )


def _profiles_and_account_data() -> None:
    """Profiles, account data, room tags and filters."""
    op.execute(
        """
        CREATE TABLE profiles (
            user_id     TEXT PRIMARY KEY REFERENCES users (user_id),
            displayname TEXT,
            avatar_url  TEXT
        );

        CREATE TABLE account_data (
            user_id   TEXT NOT NULL,
            room_id   TEXT NOT NULL DEFAULT '',  -- '' for global account data
            type      TEXT NOT NULL,
            content   JSONB NOT NULL,
            stream_id BIGINT NOT NULL,
            PRIMARY KEY (user_id, room_id, type)
        );
        CREATE INDEX account_data_stream_idx ON account_data (user_id, stream_id);

        CREATE TABLE room_tags (
            user_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            tag     TEXT NOT NULL,
            content JSONB NOT NULL,
            PRIMARY KEY (user_id, room_id, tag)
        );

        CREATE TABLE user_filters (
            user_id   TEXT NOT NULL,
            filter_id BIGINT NOT NULL,
            filter    JSONB NOT NULL,
            PRIMARY KEY (user_id, filter_id)
        );
        """
    )
