"""Receipts, presence and to-device messages: the ephemeral streams kept in tables.

Each row carries its position on its stream (see 0004_streams.py) so that sync reads
"what changed since" with an index range scan. Typing lives only in memory.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- The latest receipt per (room, type, user, thread); thread_id '' is unthreaded.
        CREATE TABLE receipts (
            room_id               TEXT NOT NULL,
            receipt_type          TEXT NOT NULL,
            user_id               TEXT NOT NULL,
            thread_id             TEXT NOT NULL,
            event_id              TEXT NOT NULL,
            -- the receipted event's place in the timeline: receipts never move backwards
            event_stream_ordering BIGINT,
            ts                    BIGINT NOT NULL,
            stream_id             BIGINT NOT NULL,
            PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
        );
        CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);

        CREATE TABLE presence (
            user_id        TEXT PRIMARY KEY,
            state          TEXT NOT NULL,
            status_msg     TEXT,
            last_active_ts BIGINT NOT NULL,
            -- last sign of life (a sync or a PUT): no sign for a while means offline
            last_seen_ts   BIGINT NOT NULL,
            stream_id      BIGINT NOT NULL
        );
        CREATE INDEX presence_stream ON presence (stream_id);
        CREATE INDEX presence_live ON presence (state, last_seen_ts) WHERE state <> 'offline';

        -- Undelivered to-device messages, deleted once the device acknowledges them.
        CREATE TABLE to_device_messages (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            stream_id BIGINT NOT NULL,
            sender    TEXT NOT NULL,
            type      TEXT NOT NULL,
            content   TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id, stream_id)
        );

        -- Transaction ids of /sendToDevice, so a retried request is not delivered twice.
        CREATE TABLE to_device_txn_ids (
            user_id    TEXT NOT NULL,
            device_id  TEXT NOT NULL,
            txn_id     TEXT NOT NULL,
            created_ts BIGINT NOT NULL,
            PRIMARY KEY (user_id, device_id, txn_id)
        );
        """
    )
