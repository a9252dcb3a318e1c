"""Single sign-on: accounts linked to an identity provider's subject id (Synapse's
`user_external_ids`, so a renamed email at the provider keeps the account), the
logins in flight between the redirect and the callback, first logins waiting for
their user to pick a username, and the provider's session each SSO-made device came
from (carried by its login token), so the provider's back-channel logout ends it.

Revision ID: 0026
Revises: 0025
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE user_external_ids (
            auth_provider TEXT NOT NULL,
            external_id   TEXT NOT NULL,
            user_id       TEXT NOT NULL REFERENCES users (user_id),
            PRIMARY KEY (auth_provider, external_id)
        );
        CREATE INDEX user_external_ids_user ON user_external_ids (user_id);
        CREATE TABLE sso_logins (
            state        TEXT PRIMARY KEY,
            browser_hash BYTEA NOT NULL,
            idp_id       TEXT NOT NULL,
            nonce        TEXT NOT NULL,
            code_verifier TEXT,
            redirect_url TEXT,
            uia_session  TEXT,
            expires_ts   BIGINT NOT NULL
        );
        CREATE TABLE sso_username_sessions (
            session_hash BYTEA PRIMARY KEY,
            idp_id       TEXT NOT NULL,
            external_id  TEXT NOT NULL,
            localpart    TEXT,
            display_name TEXT,
            auth_session TEXT,
            redirect_url TEXT NOT NULL,
            expires_ts   BIGINT NOT NULL
        );
        ALTER TABLE login_tokens
            ADD COLUMN auth_provider_id TEXT,
            ADD COLUMN auth_provider_session_id TEXT;
        CREATE TABLE device_auth_providers (
            user_id                  TEXT NOT NULL,
            device_id                TEXT NOT NULL,
            auth_provider_id         TEXT NOT NULL,
            auth_provider_session_id TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id)
        );
        CREATE INDEX device_auth_providers_session
            ON device_auth_providers (auth_provider_id, auth_provider_session_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE device_auth_providers, sso_username_sessions, sso_logins, user_external_ids;
        ALTER TABLE login_tokens DROP COLUMN auth_provider_id,
            DROP COLUMN auth_provider_session_id;
        """
    )
