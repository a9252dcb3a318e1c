"""Single sign-on: accounts linked to an identity provider's subject id (Synapse's
`user_external_ids`, so a renamed email at the provider keeps the account), the
logins in flight between the redirect and the callback, and first logins waiting
for their user to pick a username.

Revision ID: 0026
Revises: 0022
"""

from alembic import op

revision = "0026"
down_revision = "0022"
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
            redirect_url TEXT NOT NULL,
            expires_ts   BIGINT NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE sso_username_sessions, sso_logins, user_external_ids")
