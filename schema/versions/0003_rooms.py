"""Rooms: the event DAG, state snapshots as delta chains, current state, memberships.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _rooms_and_state_groups()
    _events()
    _current_state_and_memberships()
    _search_directory_and_reports()
    _history_indexes()


def _rooms_and_state_groups() -> None:
    """Rooms, and state snapshots as delta chains."""
    op.execute(
        """
        CREATE TABLE rooms (
            room_id             TEXT PRIMARY KEY,
            room_version        TEXT NOT NULL,
            creator             TEXT,
            created_ts          BIGINT NOT NULL,
            is_public           BOOLEAN NOT NULL DEFAULT FALSE,
            -- the state group holding the room's current (resolved) state
            current_state_group BIGINT
        );

        -- State snapshots. A group is a delta against prev_group (or a full snapshot when
        -- prev_group is NULL); chains stay short so reading any state is bounded.
        CREATE TABLE state_groups (
            id          BIGSERIAL PRIMARY KEY,
            room_id     TEXT NOT NULL,
            prev_group  BIGINT REFERENCES state_groups (id),
            hops        INTEGER NOT NULL,  -- deltas between this group and its snapshot
            size        INTEGER NOT NULL   -- entries in the full state
        );
        CREATE TABLE state_group_entries (
            state_group BIGINT NOT NULL REFERENCES state_groups (id),
            type        TEXT NOT NULL,
            state_key   TEXT NOT NULL,
            event_id    TEXT NOT NULL,
            PRIMARY KEY (state_group, type, state_key)
        );
        """
    )


def _events() -> None:
    """The event DAG: events, their prev edges, and the forward extremities."""
    op.execute(
        """
        CREATE TABLE events (
            event_id         TEXT PRIMARY KEY,
            room_id          TEXT NOT NULL,
            type             TEXT NOT NULL,
            state_key        TEXT,
            sender           TEXT NOT NULL,
            depth            BIGINT NOT NULL,
            origin_server_ts BIGINT NOT NULL,
            -- NULL for outliers: events we hold without knowing their place in the timeline
            stream_ordering  BIGINT UNIQUE,
            -- the PDU exactly as created or received (what was signed), without unsigned
            json             TEXT NOT NULL,
            state_group      BIGINT,  -- the state after this event
            rejected_reason  TEXT,
            soft_failed      BOOLEAN NOT NULL DEFAULT FALSE,
            redacted_by      TEXT,
            relates_to       TEXT,
            rel_type         TEXT,
            contains_url     BOOLEAN NOT NULL DEFAULT FALSE,
            -- Auth edges live with the event: only auth-chain walks read them, always
            -- from the event, and an edge table with its index cost ~200 bytes an edge.
            auth_event_ids   TEXT[] NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
        CREATE INDEX events_room_depth ON events (room_id, depth, stream_ordering);
        CREATE INDEX events_relations ON events (relates_to, rel_type)
            WHERE relates_to IS NOT NULL;

        CREATE TABLE event_edges (
            event_id      TEXT NOT NULL,
            prev_event_id TEXT NOT NULL,
            PRIMARY KEY (event_id, prev_event_id)
        );
        CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

        CREATE TABLE forward_extremities (
            room_id  TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (room_id, event_id)
        );
        """
    )


def _current_state_and_memberships() -> None:
    """Current state, memberships, aliases and client transaction ids."""
    op.execute(
        """
        CREATE TABLE current_state (
            room_id   TEXT NOT NULL,
            type      TEXT NOT NULL,
            state_key TEXT NOT NULL,
            event_id  TEXT NOT NULL,
            PRIMARY KEY (room_id, type, state_key)
        );

        -- Each user's current membership of each room, for "rooms of U" and "members of R".
        CREATE TABLE room_memberships (
            room_id         TEXT NOT NULL,
            user_id         TEXT NOT NULL,
            membership      TEXT NOT NULL,
            event_id        TEXT NOT NULL,
            sender          TEXT NOT NULL,
            stream_ordering BIGINT NOT NULL,
            displayname     TEXT,
            avatar_url      TEXT,
            forgotten       BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

        CREATE TABLE room_aliases (
            room_alias TEXT PRIMARY KEY,
            room_id    TEXT NOT NULL,
            creator    TEXT NOT NULL,
            created_ts BIGINT NOT NULL
        );
        CREATE INDEX room_aliases_room ON room_aliases (room_id);

        -- Client transaction ids, so a retried send returns the first event.
        CREATE TABLE event_txn_ids (
            user_id   TEXT NOT NULL,
            device_id TEXT NOT NULL,
            txn_id    TEXT NOT NULL,
            event_id  TEXT NOT NULL,
            PRIMARY KEY (user_id, device_id, txn_id)
        );
        """
    )


def _search_directory_and_reports() -> None:
    """Full-text search, the public room index, and reports."""
    op.execute(
        """
        -- Full-text search over the keys /search knows (content.body of messages,
        -- content.name and content.topic), computed by PostgreSQL as the row is inserted so
        -- persisting an event stays one statement. The 'simple' configuration (lower-cased
        -- words, no stemming, no stop words) because rooms speak every language; queries
        -- match word prefixes to recover most of what stemming would find.
        ALTER TABLE events ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
            CASE WHEN type IN ('m.room.message', 'm.room.name', 'm.room.topic')
                -- \\u0000 and lone surrogates are valid JSON text but not jsonb: such an
                -- event stays unsearchable rather than becoming unstorable.
                AND json !~ '\\\\u(0000|[dD][89a-fA-F])'
            THEN to_tsvector('simple', coalesce(json::jsonb -> 'content' ->> CASE type
                WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name'
                ELSE 'topic' END, ''))
            END
        ) STORED;
        CREATE INDEX events_search ON events USING gin (search_vector)
            WHERE search_vector IS NOT NULL;

        -- Published rooms are listed by the directory; few rows, read often.
        CREATE INDEX rooms_public ON rooms (room_id) WHERE is_public;

        -- Reports of events and rooms, for server admins to act on.
        CREATE TABLE event_reports (
            id          BIGSERIAL PRIMARY KEY,
            room_id     TEXT NOT NULL,
            event_id    TEXT NOT NULL,
            user_id     TEXT NOT NULL,
            reason      TEXT,
            score       INTEGER,
            received_ts BIGINT NOT NULL
        );
        CREATE INDEX event_reports_room ON event_reports (room_id, received_ts);
        CREATE TABLE room_reports (
            id          BIGSERIAL PRIMARY KEY,
            room_id     TEXT NOT NULL,
            user_id     TEXT NOT NULL,
            reason      TEXT NOT NULL,
            received_ts BIGINT NOT NULL
        );
        CREATE INDEX room_reports_room ON room_reports (room_id, received_ts);
        """
    )


def _history_indexes() -> None:
    """Indexes for history visibility, timestamps and threads."""
    op.execute(
        """
        -- History: a user's membership events in a room (history visibility, "did U join
        -- after E"), events by time (timestamp_to_event), and thread roots by activity.
        CREATE INDEX events_room_type_state_key ON events (room_id, type, state_key)
            WHERE state_key IS NOT NULL;
        CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
        CREATE INDEX events_room_threads ON events (room_id, relates_to)
            WHERE rel_type = 'm.thread';
        """
    )
