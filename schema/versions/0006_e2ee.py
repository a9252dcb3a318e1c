"""End-to-end encryption: device and one-time keys, cross-signing, key backup, and the
device-list stream that tells clients whose keys to re-fetch.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _device_and_one_time_keys()
    _cross_signing()
    _device_list_stream()
    _key_backup()


def _device_and_one_time_keys() -> None:
    """Device keys, one-time keys and fallback keys."""
    op.execute(
        """
        -- A device's identity keys, as the device signed them (signatures others add
        -- later live in e2e_signatures). One row per device; never replaced.
        CREATE TABLE e2e_device_keys (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            key_json  TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id)
        );

        -- One-time keys are handed out once: claiming deletes the row.
        CREATE TABLE e2e_one_time_keys (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            key_id    TEXT NOT NULL,
            key_json  TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id, algorithm, key_id)
        );

        -- At most one fallback key per device and algorithm; `used` once claimed.
        CREATE TABLE e2e_fallback_keys (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            key_id    TEXT NOT NULL,
            key_json  TEXT NOT NULL,
            used      BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (user_id, device_id, algorithm)
        );
        """
    )


def _cross_signing() -> None:
    """Cross-signing keys and uploaded signatures."""
    op.execute(
        """
        -- Cross-signing keys: master, self_signing and user_signing per user.
        CREATE TABLE e2e_cross_signing_keys (
            user_id  TEXT NOT NULL,
            key_type TEXT NOT NULL,
            key_id   TEXT NOT NULL,  -- "ed25519:<public key>"
            key_json TEXT NOT NULL,
            PRIMARY KEY (user_id, key_type)
        );

        -- Signatures uploaded with /keys/signatures/upload, added to the signed key
        -- (a device's keys, keyed by device id, or a master key, keyed by its public key)
        -- when it is served.
        CREATE TABLE e2e_signatures (
            target_user_id TEXT NOT NULL,
            target_key_id  TEXT NOT NULL,
            signer_user_id TEXT NOT NULL,
            signer_key_id  TEXT NOT NULL,
            signature      TEXT NOT NULL,
            PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
        );
        """
    )


def _device_list_stream() -> None:
    """The device-list stream: key changes and room membership changes."""
    op.execute(
        """
        -- The device-list stream: a row whenever a user's devices or keys change...
        CREATE TABLE device_list_changes (
            position BIGINT NOT NULL,
            user_id  TEXT NOT NULL,
            PRIMARY KEY (position, user_id)
        );
        CREATE INDEX device_list_changes_user ON device_list_changes (user_id, position);

        -- ...and whenever a user starts or stops being joined to a room, which changes who
        -- shares a room with whom (and so whose device lists they must track).
        CREATE TABLE device_list_room_changes (
            position BIGINT NOT NULL,
            room_id  TEXT NOT NULL,
            user_id  TEXT NOT NULL,
            joined   BOOLEAN NOT NULL,
            PRIMARY KEY (position, room_id, user_id)
        );
        CREATE INDEX device_list_room_changes_user ON device_list_room_changes (user_id, position);
        CREATE INDEX device_list_room_changes_room ON device_list_room_changes (room_id, position);
        """
    )


def _key_backup() -> None:
    """Server-side key backup: versions and their keys."""
    op.execute(
        """
        -- Server-side key backup.
        CREATE TABLE room_key_backup_versions (
            user_id   TEXT NOT NULL,
            version   BIGINT NOT NULL,
            algorithm TEXT NOT NULL,
            auth_data TEXT NOT NULL,
            etag      BIGINT NOT NULL DEFAULT 0,
            deleted   BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (user_id, version)
        );
        CREATE TABLE room_key_backup_keys (
            user_id             TEXT NOT NULL,
            version             BIGINT NOT NULL,
            room_id             TEXT NOT NULL,
            session_id          TEXT NOT NULL,
            first_message_index BIGINT NOT NULL,
            forwarded_count     BIGINT NOT NULL,
            is_verified         BOOLEAN NOT NULL,
            session_data        TEXT NOT NULL,
            PRIMARY KEY (user_id, version, room_id, session_id)
        );
        """
    )
