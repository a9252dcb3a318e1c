"""An outbound federation transaction is recorded before it is sent: its id and send
time on the outbox rows it carries, so that whichever process retries it (after a
`kill -9` of the one that began it) sends the same txnId with the same contents.

Revision ID: 0032
Revises: 0031
"""

from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE federation_outbox ADD COLUMN txn_id TEXT, ADD COLUMN txn_ts BIGINT,"
        " ADD CHECK ((txn_id IS NULL) = (txn_ts IS NULL))"
    )
    op.execute(
        "CREATE INDEX federation_outbox_txn ON federation_outbox (destination, position)"
        " WHERE txn_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX federation_outbox_txn")
    op.execute("ALTER TABLE federation_outbox DROP COLUMN txn_id, DROP COLUMN txn_ts")
