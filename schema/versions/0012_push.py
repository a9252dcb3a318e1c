"""Push notifications: users' push rules, per-user push actions of events, pushers.

`push_rules` holds a user's own rules, and their changes to server-default rules
(rows with `is_default`: only `enabled` and `actions` may differ from the default).
`event_push_actions` has a row per (user, event) that notifies the user: unread
counts are these rows after the user's latest read receipt, and /notifications
lists them. `pushers` are the push gateways to send notifications to.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE push_rules (
            user_id    TEXT NOT NULL,
            kind       TEXT NOT NULL,
            rule_id    TEXT NOT NULL,
            -- a change to a server-default rule: NULL enabled/actions keep the default's
            is_default BOOLEAN NOT NULL DEFAULT FALSE,
            -- user rules of a kind are tried by descending priority
            priority   INTEGER NOT NULL DEFAULT 0,
            conditions JSONB,
            pattern    TEXT,
            actions    JSONB,
            enabled    BOOLEAN,
            PRIMARY KEY (user_id, kind, rule_id)
        );

        -- Kept narrow, one row per notified user per event: the event id and time
        -- come from events by stream ordering; NULL thread_id is the main timeline,
        -- NULL actions the plain ["notify"].
        CREATE TABLE event_push_actions (
            user_id         TEXT NOT NULL,
            stream_ordering BIGINT NOT NULL,
            room_id         TEXT NOT NULL,
            thread_id       TEXT,
            actions         JSONB,
            highlight       BOOLEAN NOT NULL,
            -- one index only (counts read it by room; /notifications sorts a user's rows)
            PRIMARY KEY (user_id, room_id, stream_ordering)
        );

        CREATE TABLE pushers (
            user_id             TEXT NOT NULL,
            app_id              TEXT NOT NULL,
            pushkey             TEXT NOT NULL,
            kind                TEXT NOT NULL,
            app_display_name    TEXT NOT NULL,
            device_display_name TEXT NOT NULL,
            profile_tag         TEXT,
            lang                TEXT NOT NULL,
            data                JSONB NOT NULL,
            access_token_id     BIGINT,
            created_ts          BIGINT NOT NULL,
            -- the last event sent to the gateway, and the backoff after failures
            last_stream_ordering BIGINT NOT NULL DEFAULT 0,
            failing_since       BIGINT,
            PRIMARY KEY (app_id, pushkey, user_id)
        );
        CREATE INDEX pushers_user ON pushers (user_id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE pushers; DROP TABLE event_push_actions; DROP TABLE push_rules;")
