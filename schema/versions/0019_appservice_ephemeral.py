"""Application services: where delivery of ephemeral data (MSC2409) stands.

For services registered with `receive_ephemeral`, `receipts_position` and
`presence_position` are the last positions of those streams handed over (NULL while
the service does not receive ephemeral data, so turning it on starts from "now").
The transaction in flight also records its ephemeral list and the positions it
reaches, so a retry sends the same content under the same txnId. Typing is in memory
and not recorded beyond the pending transaction.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE appservice_delivery
            ADD COLUMN receipts_position        BIGINT,
            ADD COLUMN presence_position        BIGINT,
            ADD COLUMN pending_ephemeral        JSONB,
            ADD COLUMN pending_receipts_up_to   BIGINT,
            ADD COLUMN pending_presence_up_to   BIGINT;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE appservice_delivery
            DROP COLUMN receipts_position,
            DROP COLUMN presence_position,
            DROP COLUMN pending_ephemeral,
            DROP COLUMN pending_receipts_up_to,
            DROP COLUMN pending_presence_up_to;
        """
    )
