"""The few pages single sign-on shows a person in their browser: choosing a provider,
picking a username, confirming a re-authentication, and errors. Server-rendered,
no scripts but the one the spec asks of a finished fallback."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode, urlparse

from aiohttp import web

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"
    "a.button,button{display:block;margin:.5em 0;padding:.6em 1em;border:1px solid #888;"
    "border-radius:6px;background:#f4f4f4;color:#000;text-decoration:none;font-size:1em}"
    "input{font-size:1em;padding:.4em;width:100%;box-sizing:border-box}.error{color:#a00}"
)


def page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def error_page(message: str, status: int) -> web.Response:
    return page("Sign-in failed", f'<p class="error">{escape(message)}</p>', status)


def link_list(links: list[tuple[str, str]]) -> str:
    return "".join(
        f'<a class="button" href="{escape(url)}">{escape(text)}</a>' for url, text in links
    )


def pick_provider(providers: list[tuple[str, str]], redirect_url: str, prefix: str) -> web.Response:
    """Links to `/login/sso/redirect/{idpId}` for each (id, name)."""
    query = urlencode({"redirectUrl": redirect_url})
    links = [
        (f"{prefix}/login/sso/redirect/{idp}?{query}", f"Continue with {name}")
        for idp, name in providers
    ]
    return page("Sign in", "<p>Choose how to sign in:</p>" + link_list(links))


def pick_username(
    suggestion: str | None, display_name: str | None, error: str | None = None, status: int = 200
) -> web.Response:
    greeting = f"Welcome, {escape(display_name)}. " if display_name else ""
    shown = f'<p class="error">{escape(error)}</p>' if error else ""
    return page(
        "Choose your username",
        f"<p>{greeting}This is your first sign-in here: choose the username of your"
        f" new account (lowercase letters, digits and ._=-/+).</p>{shown}"
        '<form method="post"><label for="username">Username</label>'
        f'<input id="username" name="username" required value="{escape(suggestion or "")}">'
        '<button type="submit">Create my account</button></form>',
        status,
    )


def confirm_redirect(url: str) -> web.Response:
    """Before a login token goes to a client the server does not know: who asks."""
    parsed = urlparse(url)
    where = f"{parsed.scheme}://{parsed.netloc}"
    return page(
        "Continue to your account",
        f"<p>You are about to sign in to <strong>{escape(where)}</strong>."
        " Continue only if you started this sign-in there.</p>" + link_list([(url, "Continue")]),
    )


def reauth(what: str, links: list[tuple[str, str]]) -> web.Response:
    return page(
        "Confirm it is you",
        f"<p>To {escape(what)}, sign in again with your identity provider.</p>" + link_list(links),
    )


def reauth_done() -> web.Response:
    """The spec's end of a fallback: tell the client (or its opener) it is done."""
    return page(
        "Thank you",
        "<p>You may now close this window and return to the application.</p>"
        "<script>if (window.onAuthDone) { window.onAuthDone(); }"
        " else if (window.opener && window.opener.postMessage) {"
        ' window.opener.postMessage("authDone", "*"); }</script>',
    )
