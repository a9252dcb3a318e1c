"""Email addresses on accounts, and the sessions that prove someone reads a mailbox.

`user_threepids` maps an address (canonical form) to the one account it belongs to:
password reset and `m.id.thirdparty` logins look users up by it.
`threepid_validation_sessions` are the sessions `requestToken` starts: the token mailed
out is kept only as a hash, so a database read does not hand out working links; it is
cleared when used (single use), and `token_expires_ts` bounds how late it may be.
A validated session is spent (`consumed_ts`) by the one request that uses it.

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE user_threepids (
            medium       TEXT NOT NULL,
            address      TEXT NOT NULL,
            user_id      TEXT NOT NULL,
            validated_at BIGINT NOT NULL,
            added_at     BIGINT NOT NULL,
            PRIMARY KEY (medium, address)
        );
        CREATE INDEX user_threepids_user ON user_threepids (user_id);

        CREATE TABLE threepid_validation_sessions (
            session_id        TEXT PRIMARY KEY,
            -- what the link is for (password_reset, registration, add_threepid): a
            -- client's requestToken for one purpose does not continue another's session
            purpose           TEXT NOT NULL,
            medium            TEXT NOT NULL,
            address           TEXT NOT NULL,
            client_secret     TEXT NOT NULL,
            last_send_attempt BIGINT NOT NULL,
            token_hash        BYTEA,
            token_expires_ts  BIGINT NOT NULL,
            next_link         TEXT,
            created_ts        BIGINT NOT NULL,
            validated_at      BIGINT,
            consumed_ts       BIGINT
        );
        CREATE INDEX threepid_validation_sessions_secret
            ON threepid_validation_sessions (client_secret, medium, address, purpose);
        CREATE INDEX threepid_validation_sessions_expiry
            ON threepid_validation_sessions (token_expires_ts);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE threepid_validation_sessions; DROP TABLE user_threepids")
