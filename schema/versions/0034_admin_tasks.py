"""Admin tasks: history purges and redactions of all of a user's events.

Their status is polled by admin tools through whichever process the poll reaches, so it
lives here rather than in the memory of the process that started the task; a task whose
process died is taken up again by another (as room deletions are, `room_deletions`).
At most one unfinished redaction per user, as Synapse refuses a second; purges of one
room may queue (they run one at a time). `result` is what the task has found so far
(the failed redactions), kept as it goes so a task taken up again carries on with it.

Revision ID: 0034
Revises: 0033
"""

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE admin_tasks (
            task_id TEXT PRIMARY KEY,
            action TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            params JSONB NOT NULL,
            status TEXT NOT NULL,
            result JSONB,
            error TEXT,
            created_ts BIGINT NOT NULL,
            updated_ts BIGINT NOT NULL,
            finished_ts BIGINT
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX admin_tasks_exclusive ON admin_tasks (action, resource_id)"
        " WHERE status IN ('scheduled', 'active') AND action = 'redact_all_events'"
    )
    op.execute(
        "CREATE INDEX admin_tasks_unfinished ON admin_tasks (task_id)"
        " WHERE status IN ('scheduled', 'active')"
    )
    op.execute("CREATE INDEX admin_tasks_finished ON admin_tasks (finished_ts)")


def downgrade() -> None:
    op.execute("DROP TABLE admin_tasks")
