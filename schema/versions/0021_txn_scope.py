"""Client transaction ids are scoped to the request path as well as the device: the
same txnId sent to another room, as another event type, or to /redact is a new request.

Rows already stored get the path their event was sent to (a redaction's is /redact).

Revision ID: 0021
Revises: 0020
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE event_txn_ids ADD COLUMN scope TEXT NOT NULL DEFAULT '';
        UPDATE event_txn_ids t SET scope = e.room_id || CASE
                WHEN e.type = 'm.room.redaction' THEN '/redact/' || COALESCE(
                    e.json::jsonb ->> 'redacts', e.json::jsonb -> 'content' ->> 'redacts', '')
                ELSE '/send/' || e.type
            END
            FROM events e WHERE e.event_id = t.event_id;
        ALTER TABLE event_txn_ids ALTER COLUMN scope DROP DEFAULT;
        ALTER TABLE event_txn_ids DROP CONSTRAINT event_txn_ids_pkey;
        ALTER TABLE event_txn_ids ADD PRIMARY KEY (user_id, device_id, scope, txn_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM event_txn_ids a USING event_txn_ids b
            WHERE (a.user_id, a.device_id, a.txn_id) = (b.user_id, b.device_id, b.txn_id)
            AND a.scope > b.scope;
        ALTER TABLE event_txn_ids DROP CONSTRAINT event_txn_ids_pkey;
        ALTER TABLE event_txn_ids DROP COLUMN scope;
        ALTER TABLE event_txn_ids ADD PRIMARY KEY (user_id, device_id, txn_id);
        """
    )
