"""Federation infrastructure: other servers' signing keys, the outbound queue per
destination, and each destination's health (backoff).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- Verify keys of other servers, from key responses whose self-signature verified.
        -- valid_until_ts is already capped at fetch time + 7 days (spec); for a key listed
        -- in old_verify_keys it is the key's expired_ts.
        CREATE TABLE server_keys (
            server_name    TEXT NOT NULL,
            key_id         TEXT NOT NULL,
            verify_key     TEXT NOT NULL,  -- unpadded base64
            valid_until_ts BIGINT NOT NULL,
            fetched_ts     BIGINT NOT NULL,
            PRIMARY KEY (server_name, key_id)
        );

        -- The newest key response of each server exactly as it signed it, so that we can
        -- answer /_matrix/key/v2/query as a notary.
        CREATE TABLE server_key_responses (
            server_name    TEXT PRIMARY KEY,
            response_json  TEXT NOT NULL,
            valid_until_ts BIGINT NOT NULL,
            fetched_ts     BIGINT NOT NULL
        );

        -- What we still have to send to each destination, in order. A PDU row names the
        -- event (its JSON is read from `events` when the transaction is built); an EDU
        -- row carries {"edu_type": ..., "content": ...}.
        CREATE TABLE federation_outbox (
            position    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            destination TEXT NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
            event_id    TEXT,
            edu_json    TEXT,
            CHECK ((kind = 'pdu') = (event_id IS NOT NULL)),
            CHECK ((kind = 'edu') = (edu_json IS NOT NULL))
        );
        CREATE INDEX federation_outbox_destination ON federation_outbox (destination, position);

        -- Health of each destination we send to: retry_at_ts is set while backing off.
        CREATE TABLE destinations (
            destination       TEXT PRIMARY KEY,
            last_success_ts   BIGINT,
            failure_count     INTEGER NOT NULL DEFAULT 0,
            retry_interval_ms BIGINT NOT NULL DEFAULT 0,
            retry_at_ts       BIGINT,
            last_error        TEXT
        );
        """
    )
