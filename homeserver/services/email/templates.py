"""What the mails say: validation links, the "already in use" notice, and the summary
of unread messages; each in plain text and HTML (values escaped in the HTML).

Subjects follow Synapse's defaults, so users moving with their server see the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from html import escape

from homeserver.services.email.mailer import Mail

_STYLE = (
    "font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;"
    " color: #17191c; max-width: 40em;"
)


class Purpose(Enum):
    """Why an address is being validated; each has its own link and wording."""

    PASSWORD_RESET = "password_reset"
    REGISTRATION = "registration"
    ADD_THREEPID = "add_threepid"


_WORDING = {
    Purpose.PASSWORD_RESET: (
        "[{server}] Password reset",
        "A password reset was requested for your account on {server}.",
        "To reset your password, follow this link and confirm:",
        "If you did not ask for this, ignore this mail: your password stays as it is.",
    ),
    Purpose.REGISTRATION: (
        "[{server}] Validate your email",
        "Someone is registering an account on {server} with this email address.",
        "To confirm that this is your address, follow this link:",
        "If this was not you, ignore this mail: no account gets this address.",
    ),
    Purpose.ADD_THREEPID: (
        "[{server}] Validate your email",
        "Someone asked to add this email address to an account on {server}.",
        "To confirm that this is your address, follow this link:",
        "If this was not you, ignore this mail: the address is not added.",
    ),
}


def _html(paragraphs: list[str]) -> str:
    body = "\n".join(paragraphs)
    return f'<!DOCTYPE html>\n<html><body style="{_STYLE}">\n{body}\n</body></html>\n'


def validation_mail(purpose: Purpose, to: str, link: str, server_name: str) -> Mail:
    subject, intro, action, outro = (part.format(server=server_name) for part in _WORDING[purpose])
    text = f"{intro}\n\n{action}\n\n{link}\n\n{outro}\n"
    html = _html(
        [
            f"<p>{escape(intro)}</p>",
            f"<p>{escape(action)}</p>",
            f'<p><a href="{escape(link)}">{escape(link)}</a></p>',
            f"<p>{escape(outro)}</p>",
        ]
    )
    return Mail(to=to, subject=subject, text=text, html=html)


def already_in_use_mail(to: str, server_name: str) -> Mail:
    """Sent instead of a link when the address already belongs to an account: its owner
    learns of the attempt, the requester learns nothing."""
    subject = f"[{server_name}] Email already in use"
    intro = (
        f"Someone tried to use this email address for an account on {server_name}, but"
        " it already belongs to an account there."
    )
    outro = (
        "If this was you, you can sign in with this address, or reset your password"
        " from the sign-in page. If not, ignore this mail: nothing was changed."
    )
    return Mail(
        to=to,
        subject=subject,
        text=f"{intro}\n\n{outro}\n",
        html=_html([f"<p>{escape(intro)}</p>", f"<p>{escape(outro)}</p>"]),
    )


@dataclass(frozen=True)
class Message:
    sender: str  # display name, or user id
    body: str  # the text shown (a placeholder for what is not text)


@dataclass(frozen=True)
class RoomSummary:
    name: str
    link: str
    messages: list[Message]
    is_invite: bool = False


def _subject(app: str, rooms: list[RoomSummary]) -> str:
    first = rooms[0]
    senders = list(dict.fromkeys(m.sender for m in first.messages))
    if first.is_invite and len(rooms) == 1:
        return f"[{app}] {senders[0]} has invited you to join the {first.name} room on {app}..."
    if len(rooms) > 1:
        return f"[{app}] You have messages on {app} in the {first.name} room and others..."
    if len(first.messages) == 1:
        return f"[{app}] You have a message on {app} from {senders[0]} in the {first.name} room..."
    return f"[{app}] You have messages on {app} in the {first.name} room..."


def notification_mail(
    to: str,
    app_name: str,
    user_name: str,
    rooms: list[RoomSummary],
    settings_hint: str,
    unsubscribe: str,
) -> Mail:
    """The summary of a user's unread messages, newest room first, each with its link."""
    text_parts = [f"Hi {user_name},", "", f"You have unread messages on {app_name}:", ""]
    html_parts = [
        f"<p>Hi {escape(user_name)},</p>",
        f"<p>You have unread messages on {escape(app_name)}:</p>",
    ]
    for room in rooms:
        text_parts.append(f"{room.name}:")
        html_parts.append(f'<h3><a href="{escape(room.link)}">{escape(room.name)}</a></h3>')
        items = []
        for message in room.messages:
            text_parts.append(f"  {message.sender}: {message.body}")
            items.append(f"<li><b>{escape(message.sender)}</b>: {escape(message.body)}</li>")
        html_parts.append("<ul>" + "".join(items) + "</ul>")
        text_parts.extend([f"  Open the room: {room.link}", ""])
    text_parts.extend([settings_hint, f"Unsubscribe: {unsubscribe}"])
    html_parts.append(
        f'<p style="color: #737d8c">{escape(settings_hint)}'
        f' <a href="{escape(unsubscribe)}">Unsubscribe</a></p>'
    )
    return Mail(
        to=to,
        subject=_subject(app_name, rooms),
        text="\n".join(text_parts) + "\n",
        html=_html(html_parts),
        unsubscribe=unsubscribe,
    )
