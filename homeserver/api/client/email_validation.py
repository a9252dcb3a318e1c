"""The pages the links in mails open. Validation links, at Synapse's paths (so links
mailed before a move from Synapse still work): the password-reset link asks for a click
first (a mail scanner fetching links must not reset anything), the others validate at
once; a validated session sends the browser on to the client's `next_link`, if it gave
one. The unsubscribe link of notification mails asks for a click too, and takes mail
clients' one-click POST (RFC 8058)."""

from __future__ import annotations

from html import escape

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.services.push.email_notifier import UNSUBSCRIBE_PATH
from homeserver.services.threepids.validation import ValidationFailed

PASSWORD_RESET_PATH = "/_synapse/client/password_reset/email/submit_token"
VALIDATE_PATHS = (
    "/_matrix/client/unstable/registration/email/submit_token",
    "/_matrix/client/unstable/add_threepid/email/submit_token",
)
PARAMS = ("sid", "client_secret", "token")


def _page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>\n"
        '<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">\n'
        f"<h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return web.Response(text=html, status=status, content_type="text/html")


def _failure(reason: str) -> web.Response:
    return _page("Validation failed", f"<p>{escape(reason)}</p>", status=400)


def _params(values: dict[str, str]) -> dict[str, str] | None:
    if all(isinstance(values.get(name), str) and values[name] for name in PARAMS):
        return {name: values[name] for name in PARAMS}
    return None


async def _validate(request: web.Request, params: dict[str, str], done: str) -> web.Response:
    try:
        next_link = await homeserver(request).validation.submit_token(
            params["sid"], params["client_secret"], params["token"]
        )
    except ValidationFailed as exc:
        return _failure(str(exc))
    if next_link is not None:
        return web.Response(status=302, headers={"Location": next_link})
    return _page("Done", f"<p>{escape(done)}</p>")


async def get_password_reset(request: web.Request) -> web.Response:
    params = _params(dict(request.query))
    if params is None:
        return _failure("This link is incomplete. Please open the whole link from the mail.")
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in params.items()
    )
    return _page(
        "Reset your password",
        "<p>You asked to reset the password of your account. Confirm, then go back to"
        " your app to choose the new password.</p>"
        f'<form method="post" action="{PASSWORD_RESET_PATH}">{hidden}'
        '<button type="submit">Confirm the password reset</button></form>',
    )


async def post_password_reset(request: web.Request) -> web.Response:
    form = await request.post()
    params = _params({k: v for k, v in form.items() if isinstance(v, str)})
    if params is None:
        return _failure("This request is incomplete. Please open the link from the mail again.")
    return await _validate(
        request,
        params,
        "Your email address is confirmed. Go back to your app to set the new password.",
    )


async def get_validate(request: web.Request) -> web.Response:
    params = _params(dict(request.query))
    if params is None:
        return _failure("This link is incomplete. Please open the whole link from the mail.")
    return await _validate(
        request, params, "Your email address is confirmed. You can go back to your app."
    )


async def get_unsubscribe(request: web.Request) -> web.Response:
    return _page(
        "Stop email notifications",
        "<p>Stop getting mails about unread messages at this address?</p>"
        f'<form method="post" action="{escape(request.path_qs)}">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def post_unsubscribe(request: web.Request) -> web.Response:
    """The confirmation, or a mail client's one-click unsubscribe: the signed link's
    query names the pusher."""
    names = ("user_id", "app_id", "pushkey", "token")
    values = [request.query.get(name) for name in names]
    done = all(values) and await homeserver(request).email_notifier.unsubscribe(
        *[str(v) for v in values]
    )
    if not done:
        return _page("Not unsubscribed", "<p>This link is not valid.</p>", status=400)
    return _page("Unsubscribed", "<p>You will get no more notification mails here.</p>")


def register(app: web.Application) -> None:
    app.router.add_get(UNSUBSCRIBE_PATH, get_unsubscribe)
    app.router.add_post(UNSUBSCRIBE_PATH, post_unsubscribe)
    app.router.add_get(PASSWORD_RESET_PATH, get_password_reset)
    app.router.add_post(PASSWORD_RESET_PATH, post_password_reset)
    for path in VALIDATE_PATHS:
        app.router.add_get(path, get_validate)
