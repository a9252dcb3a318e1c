"""What the mails say: validation links, the "already in use" notice, and the summary
of unread messages; each in plain text and HTML (values escaped in the HTML).

Subjects follow Synapse's defaults, so users moving with their server see the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from html import escape

from homeserver.services.email.mailer import Mail

_STYLE = (
    "font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;"
    " color: #17191c; max-width: 40em;"
)


# Subject templates by Synapse's names (config/email.py DEFAULT_SUBJECTS), with its
# %(app)s, %(person)s, %(room)s and %(server_name)s placeholders.
Subjects = Mapping[str, str]


class Purpose(Enum):
    """Why an address is being validated; each has its own link and wording."""

    PASSWORD_RESET = "password_reset"
    REGISTRATION = "registration"
    ADD_THREEPID = "add_threepid"


_WORDING = {
    Purpose.PASSWORD_RESET: (
        "password_reset",
        "A password reset was requested for your account on {server}.",
        "To reset your password, follow this link and confirm:",
        "If you did not ask for this, ignore this mail: your password stays as it is.",
    ),
    Purpose.REGISTRATION: (
        "email_validation",
        "Someone is registering an account on {server} with this email address.",
        "To confirm that this is your address, follow this link:",
        "If this was not you, ignore this mail: no account gets this address.",
    ),
    Purpose.ADD_THREEPID: (
        "email_validation",
        "Someone asked to add this email address to an account on {server}.",
        "To confirm that this is your address, follow this link:",
        "If this was not you, ignore this mail: the address is not added.",
    ),
}


def _html(paragraphs: list[str]) -> str:
    body = "\n".join(paragraphs)
    return f'<!DOCTYPE html>\n<html><body style="{_STYLE}">\n{body}\n</body></html>\n'


def validation_mail(
    purpose: Purpose, to: str, link: str, server_name: str, subjects: Subjects
) -> Mail:
    subject_key, *wording = _WORDING[purpose]
    intro, action, outro = (part.format(server=server_name) for part in wording)
    subject = subjects[subject_key] % {"server_name": server_name, "app": server_name}
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


def already_in_use_mail(to: str, server_name: str, subjects: Subjects) -> Mail:
    """Sent instead of a link when the address already belongs to an account: its owner
    learns of the attempt, the requester learns nothing."""
    subject = subjects["email_already_in_use"] % {"server_name": server_name, "app": server_name}
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
    named: bool = True  # False: `name` only describes a room that has none


def _subject(subjects: Subjects, app: str, rooms: list[RoomSummary]) -> str:
    """Synapse's choice of subject for a notification mail."""
    first = rooms[0]
    senders = list(dict.fromkeys(m.sender for m in first.messages))
    values = {"app": app, "person": senders[0], "room": first.name}
    if first.is_invite and len(rooms) == 1:
        key = "invite_from_person_to_room" if first.named else "invite_from_person"
    elif len(rooms) > 1:
        key = "messages_in_room_and_others" if first.named else "messages_from_person_and_others"
    elif len(first.messages) == 1:
        key = "message_from_person_in_room" if first.named else "message_from_person"
    elif first.named:
        key = "messages_in_room"
    else:
        key = "messages_from_person"
    return subjects[key] % values


def notification_mail(
    to: str,
    app_name: str,
    user_name: str,
    rooms: list[RoomSummary],
    settings_hint: str,
    unsubscribe: str,
    subjects: Subjects,
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
        subject=_subject(subjects, app_name, rooms),
        text="\n".join(text_parts) + "\n",
        html=_html(html_parts),
        unsubscribe=unsubscribe,
    )
