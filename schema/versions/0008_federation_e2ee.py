"""Federation of device lists and E2EE keys: what we announced about our users' devices
(for m.device_list_update stream ids and diffs), the device lists of remote users we
cache, and deduplication of inbound to-device messages.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- The last m.device_list_update we announced for each device of a local user:
        -- stream_id counts per user; digest is of what was announced (keys and display
        -- name), so that a change is announced once; deleted devices keep their row.
        CREATE TABLE device_list_outbound (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            stream_id BIGINT NOT NULL,
            digest    TEXT,  -- NULL once the device is deleted
            PRIMARY KEY (user_id, device_id)
        );

        -- Remote users whose device lists we hold: stream_id is the remote server's id
        -- for the list as we have it; stale means an update was missed (resync first).
        CREATE TABLE remote_device_lists (
            user_id    TEXT PRIMARY KEY,
            stream_id  BIGINT NOT NULL,
            stale      BOOLEAN NOT NULL DEFAULT FALSE,
            updated_ts BIGINT NOT NULL
        );
        CREATE TABLE remote_devices (
            user_id      TEXT NOT NULL,
            device_id    TEXT NOT NULL,
            keys_json    TEXT,
            display_name TEXT,
            PRIMARY KEY (user_id, device_id)
        );
        -- Cross-signing keys (master, self_signing) of remote users.
        CREATE TABLE remote_cross_signing_keys (
            user_id  TEXT NOT NULL,
            key_type TEXT NOT NULL,
            key_json TEXT NOT NULL,
            PRIMARY KEY (user_id, key_type)
        );

        -- m.direct_to_device message ids already delivered, per sending user.
        CREATE TABLE inbound_to_device_ids (
            sender      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            received_ts BIGINT NOT NULL,
            PRIMARY KEY (sender, message_id)
        );
        CREATE INDEX inbound_to_device_ids_ts ON inbound_to_device_ids (received_ts);
        """
    )
