"""Simplified sliding sync (MSC4186): per-room facts that order and filter a user's
room list without reading each room, and the per-connection state that lets each
answer carry only what changed since the client's `pos`.

`sliding_sync_rooms` holds, per room, the stream position of its last event of a
bumping type (the MSC's recency order), its room type and whether it is encrypted;
the event writer keeps it current inside each event's transaction. Rooms that exist
already are filled in from their events here.

A connection is (user, device, conn_id), deleted with its device; each answer is a row of
`sliding_sync_positions` whose id is the `pos` given to the client, holding the stream
token the answer was computed at and what the connection then had of each room.

Revision ID: 0024
Revises: 0023
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

BUMP_TYPES = (
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
)


def upgrade() -> None:
    types = ", ".join(f"'{t}'" for t in BUMP_TYPES)
    op.execute(
        f"""
        CREATE TABLE sliding_sync_rooms (
            room_id      TEXT PRIMARY KEY,
            bump_stamp   BIGINT NOT NULL DEFAULT 0,
            room_type    TEXT,
            is_encrypted BOOLEAN NOT NULL DEFAULT FALSE
        );
        INSERT INTO sliding_sync_rooms (room_id, bump_stamp, room_type, is_encrypted)
        SELECT r.room_id,
            COALESCE((SELECT max(e.stream_ordering) FROM events e
                WHERE e.room_id = r.room_id AND e.type IN ({types})
                AND e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL
                AND NOT e.soft_failed), 0),
            (SELECT e.json::jsonb #>> '{{content,type}}' FROM current_state c
                JOIN events e ON e.event_id = c.event_id
                WHERE c.room_id = r.room_id AND c.type = 'm.room.create' AND c.state_key = ''),
            EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = r.room_id
                AND c.type = 'm.room.encryption' AND c.state_key = '')
        FROM rooms r;

        CREATE TABLE sliding_sync_connections (
            id         BIGSERIAL PRIMARY KEY,
            user_id    TEXT NOT NULL,
            device_id  TEXT NOT NULL,
            conn_id    TEXT NOT NULL,
            created_ts BIGINT NOT NULL,
            UNIQUE (user_id, device_id, conn_id)
        );

        CREATE TABLE sliding_sync_positions (
            id            BIGSERIAL PRIMARY KEY,
            connection_id BIGINT NOT NULL
                REFERENCES sliding_sync_connections (id) ON DELETE CASCADE,
            token         TEXT NOT NULL,
            rooms         JSONB NOT NULL,
            created_ts    BIGINT NOT NULL
        );
        CREATE INDEX sliding_sync_positions_connection ON sliding_sync_positions (connection_id);

        -- A deleted device's connections go with it (a token without a device row,
        -- as application services use, may still hold connections: no foreign key).
        CREATE FUNCTION delete_device_sliding_sync() RETURNS trigger AS $$
        BEGIN
            DELETE FROM sliding_sync_connections
            WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER devices_deleted_sliding_sync AFTER DELETE ON devices
            FOR EACH ROW EXECUTE FUNCTION delete_device_sliding_sync();
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER devices_deleted_sliding_sync ON devices;"
        " DROP FUNCTION delete_device_sliding_sync();"
        " DROP TABLE sliding_sync_positions; DROP TABLE sliding_sync_connections;"
        " DROP TABLE sliding_sync_rooms"
    )
