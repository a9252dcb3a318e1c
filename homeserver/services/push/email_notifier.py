"""Email notifications of unread messages, for users with an `email` pusher (as
Synapse's notification mails): once a notification has stayed unread for
`email.notif_delay_before_mail`, one mail tells of every message still unread then,
room by room, each room with a link back to it, and the invites still unanswered;
what the user read meanwhile (a read receipt, or joining the room they were invited
to) is left out, and a mail is not sent at all if everything was read.

The pusher row is the cursor, as for push gateways (services/push/gateway.py): its
`last_stream_ordering` passes what a mail told of, so a restart mails nothing twice,
and the same delivery engine runs each pusher under its advisory lock, so worker
processes never mail the same notification twice. A pusher whose oldest unread
notification is not due yet waits on a timer until it is.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

from federation.events import MEMBER, Event
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.email.mailer import Mail, Mailer, MailError
from homeserver.services.email.templates import Message, RoomSummary, notification_mail
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database, DatabaseError
from homeserver.storage.push import notifications as actions_store
from homeserver.storage.push import pushers as store
from homeserver.storage.rooms import state

log = logging.getLogger(__name__)

KIND = "email"
UNSUBSCRIBE_PATH = "/_matrix/client/unstable/pushers/remove"
MAX_MESSAGES = 50  # per mail; the rest go in the next one
MAX_BODY_CHARS = 300
MAIL_RETRY_MS = 5 * 60 * 1000
LOCKED_RETRY_MS = 5000
NAME_KEY = ("m.room.name", "")
ALIAS_KEY = ("m.room.canonical_alias", "")
SETTINGS_HINT = (
    "You get this mail because email notifications are on for your account; your"
    " client's notification settings turn them off."
)
_PLACEHOLDERS = {
    "m.image": "sent an image.",
    "m.video": "sent a video.",
    "m.audio": "sent an audio file.",
    "m.file": "sent a file.",
}


def message_text(event: Event) -> str:
    """What a mail shows of an event: its text, shortened, or what kind of thing it is."""
    if event.type == "m.room.encrypted":
        return "sent an encrypted message."
    if event.type == MEMBER:
        return "invited you." if event.membership == "invite" else "changed their membership."
    msgtype = event.content.get("msgtype")
    if isinstance(msgtype, str) and msgtype in _PLACEHOLDERS:
        return _PLACEHOLDERS[msgtype]
    body = event.content.get("body")
    if not isinstance(body, str) or not body:
        return "sent an event."
    return body if len(body) <= MAX_BODY_CHARS else body[: MAX_BODY_CHARS - 1] + "…"


class EmailNotifier:
    """`start()`, then `notify_users` after commits (as the push gateway); `close()`."""

    def __init__(
        self,
        db: Database,
        cache: EventCache,
        mailer: Mailer,
        *,
        enabled: bool,
        delay_ms: int,
        app_name: str,
        client_base_url: str | None,
        public_baseurl: str,
        secret: bytes,
    ) -> None:
        self.db = db
        self.public_baseurl = public_baseurl.rstrip("/") + "/"
        # Unsubscribe links are signed with a key of their own, derived from `secret`.
        self._unsubscribe_key = hashlib.sha256(b"email unsubscribe\n" + secret).digest()
        self.cache = cache
        self.mailer = mailer
        self.enabled = enabled and mailer.enabled
        self.delay_ms = delay_ms
        self.app_name = app_name
        self.client_base_url = client_base_url.rstrip("/") if client_base_url else None
        self._workers: DeliveryWorkers[store.PusherKey] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda key: f"email {key.user_id}",
            failure_retry_ms=MAIL_RETRY_MS,
            locked_retry_ms=LOCKED_RETRY_MS,
            pending=self._pending,
            name="email notifications",
        )
        self._lookups: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        if self.enabled:
            self._workers.start()

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(list(self._lookups))
        await self._workers.close()

    def notify_users(self, user_ids: Iterable[str], room_ids: Iterable[str] = ()) -> None:
        """These users, and the joined members of these rooms, just got push actions
        (committed); never waits."""
        if not self.enabled or self._closing:
            return
        users, rooms = sorted(set(user_ids)), sorted(set(room_ids))
        if users or rooms:
            task = asyncio.create_task(self._wake_users(users, rooms), name="email wake")
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)

    async def _wake_users(self, user_ids: list[str], room_ids: list[str]) -> None:
        try:
            async with self.db.pool.connection() as conn:
                keys = await store.pushers_to_wake(conn, user_ids, room_ids, KIND)
        except (DatabaseError, OSError):
            log.warning("email notifications: cannot look up pushers; the sweep will retry")
            return
        for key in keys:
            self._workers.wake(key)

    async def _pending(self) -> list[tuple[store.PusherKey, int | None]]:
        async with self.db.pool.connection() as conn:
            keys = await store.pushers_with_work(conn, now_ms(), KIND)
        return [(key, None) for key in keys]

    async def _drain(self, key: store.PusherKey) -> int | None:
        """Mail what is due; the time to look again at, or None when nothing waits."""
        async with self.db.pool.connection() as conn:
            pusher = await store.delivery_state(conn, key, KIND)
            if pusher is None:
                return None
            safe = (await streams.safe_positions(conn))["events"]
            cursor = pusher.last_stream_ordering
            pending = await actions_store.unread_pending_actions(
                conn, key.user_id, cursor, safe, MAX_MESSAGES
            )
            if not pending:
                await store.advance(conn, key, max(cursor, safe))  # all read, or none
                return None
            now = now_ms()
            due = min(pending[0].origin_server_ts, now) + self.delay_ms
            if due > now:
                return due
            mail = await self._mail(conn, key, pending)
        try:
            await self.mailer.send(mail)
        except MailError as exc:
            log.warning("email notification for %s not sent: %s", key.user_id, exc)
            return now_ms() + MAIL_RETRY_MS
        async with self.db.pool.connection() as conn:
            await store.advance(conn, key, pending[-1].stream_ordering)
        return None if len(pending) < MAX_MESSAGES else now_ms()

    async def _mail(
        self,
        conn: Connection,
        key: store.PusherKey,
        pending: Sequence[actions_store.PendingAction],
    ) -> Mail:
        events = await load_events(conn, self.cache, [p.event_id for p in pending])
        by_room: dict[str, list[Message]] = {}
        invited_to: set[str] = set()
        for action in pending:
            event = events.get(action.event_id)
            if event is None:
                continue
            if event.type == MEMBER and event.state_key == key.user_id:
                invited_to.add(action.room_id)
            name = await actions_store.display_name(conn, action.room_id, event.sender)
            by_room.setdefault(action.room_id, []).append(
                Message(name or event.sender, message_text(event))
            )
        rooms = []
        # The room with the newest message first.
        for room_id in dict.fromkeys(p.room_id for p in reversed(pending)):
            messages = by_room.get(room_id)
            if messages:
                name = await self._room_name(conn, room_id)
                rooms.append(
                    RoomSummary(
                        name or f"your conversation with {messages[0].sender}",
                        self._link(room_id),
                        messages,
                        is_invite=room_id in invited_to,
                        named=name is not None,
                    )
                )
        user_name = await actions_store.display_name(conn, pending[0].room_id, key.user_id)
        return notification_mail(
            key.pushkey,
            self.app_name,
            user_name or key.user_id,
            rooms,
            SETTINGS_HINT,
            self.unsubscribe_link(key),
            self.mailer.subjects,
        )

    def _unsubscribe_token(self, key: store.PusherKey) -> str:
        message = "\n".join((key.user_id, key.app_id, key.pushkey)).encode()
        digest = hmac.new(self._unsubscribe_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def unsubscribe_link(self, key: store.PusherKey) -> str:
        """A link that removes this email pusher, needing no login (it is in the mail)."""
        query = urlencode(
            {
                "user_id": key.user_id,
                "app_id": key.app_id,
                "pushkey": key.pushkey,
                "token": self._unsubscribe_token(key),
            }
        )
        return f"{self.public_baseurl}{UNSUBSCRIBE_PATH.lstrip('/')}?{query}"

    async def unsubscribe(self, user_id: str, app_id: str, pushkey: str, token: str) -> bool:
        """Remove the email pusher an unsubscribe link names; False if the link is forged."""
        key = store.PusherKey(user_id, app_id, pushkey)
        if not hmac.compare_digest(token, self._unsubscribe_token(key)):
            return False
        async with self.db.pool.connection() as conn:
            await store.delete_pusher(conn, user_id, app_id, pushkey)
        return True

    async def _room_name(self, conn: Connection, room_id: str) -> str | None:
        """The room's name, or its canonical alias; None when it has neither."""
        ids = await state.get_current_state(conn, room_id, {NAME_KEY, ALIAS_KEY})
        found = await load_events(conn, self.cache, ids.values())
        for key, field in ((NAME_KEY, "name"), (ALIAS_KEY, "alias")):
            event = found.get(ids.get(key, ""))
            value = event.content.get(field) if event is not None else None
            if isinstance(value, str) and value:
                return value
        return None

    def _link(self, room_id: str) -> str:
        if self.client_base_url:
            return f"{self.client_base_url}/#/room/{quote(room_id, safe='!:')}"
        return f"https://matrix.to/#/{quote(room_id, safe='!:')}"
