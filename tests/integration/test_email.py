"""Email over a real SMTP server on loopback (aiosmtpd): password reset, adding,
listing and removing addresses, logging in with one, registration that requires one;
each reading the mail the server sent and following its link. Tokens are single-use
and expire, and nothing tells an outsider whether an address is registered."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.conftest import PostgresServer
from tests.integration.conftest import (
    CLIENT_V3,
    RoomUser,
    auth_header,
    login_user,
    register_user,
)
from tests.integration.mail import (
    Mailbox,
    free_port,
    html_of,
    link_in,
    mail_server,
    open_mailbox,
    text_of,
)
from tests.integration.test_process import cli

SECRET = "s3cret-client"
RESET_TOKEN = "/account/password/email/requestToken"
ADD_TOKEN = "/account/3pid/email/requestToken"
REGISTER_TOKEN = "/register/email/requestToken"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')
FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)">')


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    async with open_mailbox() as box:
        yield box


async def post(
    client: TestClient[Any, Any], path: str, body: dict[str, Any], token: str | None = None
) -> tuple[int, Any]:
    headers = auth_header(token) if token else {}
    resp = await client.post(f"{CLIENT_V3}{path}", json=body, headers=headers)
    return resp.status, await resp.json()


async def request_token(
    client: TestClient[Any, Any],
    path: str,
    address: str,
    attempt: int = 1,
    token: str | None = None,
    secret: str = SECRET,
) -> str:
    status, body = await post(
        client, path, {"client_secret": secret, "email": address, "send_attempt": attempt}, token
    )
    assert status == 200, body
    assert set(body) == {"sid"}
    return str(body["sid"])


async def follow(link: str, method: str = "GET", data: Any = None) -> tuple[int, str]:
    """Open a link as a browser would (the real URL, not through the test client)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, link, data=data, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()


async def confirm_reset(link: str) -> tuple[int, str]:
    """The password-reset page asks for a click: submit its form."""
    status, page = await follow(link)
    assert status == 200, page
    action = FORM_ACTION.search(page)
    assert action is not None, page
    base = link.split("/_synapse/")[0]
    return await follow(base + action.group(1), "POST", dict(HIDDEN.findall(page)))


async def add_email(
    client: TestClient[Any, Any], box: Mailbox, user: dict[str, Any], address: str
) -> None:
    """The whole flow: requestToken, the mail's link, /3pid/add with the password."""
    before = len(box.to(address))
    sid = await request_token(client, ADD_TOKEN, address, token=user["access_token"])
    status, page = await follow(link_in(await box.wait_for(address, before + 1)))
    assert status == 200 and "confirmed" in page, page
    body: dict[str, Any] = {"sid": sid, "client_secret": SECRET}
    status, challenge = await post(client, "/account/3pid/add", body, user["access_token"])
    assert status == 401 and challenge["flows"], challenge
    body["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user["user_id"]},
        "password": "secret pw",
        "session": challenge["session"],
    }
    status, result = await post(client, "/account/3pid/add", body, user["access_token"])
    assert (status, result) == (200, {})


def email_login(address: str, password: str) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": address},
        "password": password,
    }


async def test_add_list_login_and_delete(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(homeserver_client, mailbox)
    alice = await register_user(client, "alice")
    await add_email(client, mailbox, alice, "alice@example.org")
    mail = mailbox.to("alice@example.org")[0]
    assert mail["Subject"] == "[test.local] Validate your email"
    assert mail["From"] == "Matrix homeserver <noreply@test.local>"
    resp = await client.get(f"{CLIENT_V3}/account/3pid", headers=auth_header(alice["access_token"]))
    [threepid] = (await resp.json())["threepids"]
    assert (threepid["medium"], threepid["address"]) == ("email", "alice@example.org")
    assert threepid["validated_at"] <= threepid["added_at"]
    # Logging in with the address, in any case.
    status, body = await post(client, "/login", email_login("Alice@EXAMPLE.org", "secret pw"))
    assert (status, body["user_id"]) == (200, alice["user_id"])
    status, body = await post(
        client,
        "/account/3pid/delete",
        {"medium": "email", "address": "alice@example.org"},
        alice["access_token"],
    )
    assert (status, body) == (200, {"id_server_unbind_result": "no-support"})
    status, body = await post(client, "/login", email_login("alice@example.org", "secret pw"))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.get(f"{CLIENT_V3}/capabilities", headers=auth_header(alice["access_token"]))
    assert (await resp.json())["capabilities"]["m.3pid_changes"] == {"enabled": True}


async def test_password_reset(homeserver_client: Callable[..., Any], mailbox: Mailbox) -> None:
    subjects = {"password_reset": "[%(server_name)s] Forgot your password?"}
    client = await mail_server(homeserver_client, mailbox, **{"email.subjects": subjects})
    bob = await register_user(client, "bob")
    await add_email(client, mailbox, bob, "bob@example.org")
    sid = await request_token(client, RESET_TOKEN, "BOB@example.org")
    mail = await mailbox.wait_for("bob@example.org", 2)
    assert mail["Subject"] == "[test.local] Forgot your password?"
    link = link_in(mail)
    assert "/_synapse/client/password_reset/email/submit_token?" in link
    # Before the link is followed, the email stage does not pass.
    auth = {
        "type": "m.login.email.identity",
        "threepid_creds": {"sid": sid, "client_secret": SECRET},
    }
    reset = {"new_password": "new pw"}
    status, challenge = await post(client, "/account/password", reset)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.email.identity"]}]
    auth["session"] = challenge["session"]
    status, body = await post(client, "/account/password", {**reset, "auth": auth})
    assert (status, body["errcode"]) == (401, "M_THREEPID_AUTH_FAILED")
    status, page = await confirm_reset(link)
    assert status == 200 and "confirmed" in page, page
    # The link is spent: following it again is refused.
    status, page = await confirm_reset(link)
    assert status == 400 and "already used" in page, page
    status, body = await post(client, "/account/password", {**reset, "auth": auth})
    assert (status, body) == (200, {})
    # The old password and the old sessions are gone; the new password works.
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(bob["access_token"]))
    assert resp.status == 401
    status, body = await post(client, "/login", email_login("bob@example.org", "secret pw"))
    assert status == 403
    status, body = await post(client, "/login", email_login("bob@example.org", "new pw"))
    assert (status, body["user_id"]) == (200, bob["user_id"])
    # The validated session was spent by the reset: it cannot reset again.
    status, challenge = await post(client, "/account/password", {"new_password": "x"})
    auth["session"] = challenge["session"]
    status, body = await post(client, "/account/password", {"new_password": "x", "auth": auth})
    assert (status, body["errcode"]) == (401, "M_THREEPID_AUTH_FAILED")


async def test_nothing_tells_whether_an_address_is_registered(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(homeserver_client, mailbox)
    carol = await register_user(client, "carol")
    await add_email(client, mailbox, carol, "carol@example.org")
    # A password reset for an unknown address answers as for a known one...
    await request_token(client, RESET_TOKEN, "nobody@example.org")
    await request_token(client, RESET_TOKEN, "carol@example.org")
    await mailbox.wait_for("carol@example.org", 2)
    # ...and mails nothing (the known address's mail, sent after, has arrived).
    assert mailbox.to("nobody@example.org") == []
    # Registering with a registered address answers alike; its owner is told, with no link.
    await request_token(client, REGISTER_TOKEN, "carol@example.org")
    notice = await mailbox.wait_for("carol@example.org", 3)
    assert notice["Subject"] == "[test.local] Email already in use"
    assert "http" not in text_of(notice)
    dave = await register_user(client, "dave")
    await request_token(client, ADD_TOKEN, "carol@example.org", token=dave["access_token"])
    assert "already" in text_of(await mailbox.wait_for("carol@example.org", 4))
    # A login with an unknown address fails exactly as a wrong password does.
    unknown = await post(client, "/login", email_login("nobody@example.org", "secret pw"))
    wrong = await post(client, "/login", email_login("carol@example.org", "wrong"))
    assert unknown == wrong == (403, {"errcode": "M_FORBIDDEN", "error": wrong[1]["error"]})


async def test_late_token_is_refused(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(
        homeserver_client, mailbox, **{"email.validation_token_lifetime": "1s"}
    )
    erin = await register_user(client, "erin")
    sid = await request_token(client, ADD_TOKEN, "erin@example.org", token=erin["access_token"])
    link = link_in(await mailbox.wait_for("erin@example.org"))
    await asyncio.sleep(1.2)
    status, page = await follow(link)
    assert status == 400 and "expired" in page, page
    status, body = await post(
        client, "/account/3pid/add", {"sid": sid, "client_secret": SECRET}, erin["access_token"]
    )
    assert status == 401  # the password stage first
    auth = {"type": "m.login.password", "user": "erin", "password": "secret pw"}
    status, body = await post(
        client,
        "/account/3pid/add",
        {"sid": sid, "client_secret": SECRET, "auth": {**auth, "session": body["session"]}},
        erin["access_token"],
    )
    assert (status, body["errcode"]) == (400, "M_THREEPID_AUTH_FAILED")
    # A new send attempt mails a new link; the older one stops working.
    await request_token(client, ADD_TOKEN, "erin@example.org", 2, erin["access_token"])
    fresh = link_in(await mailbox.wait_for("erin@example.org", 2))
    status, page = await follow(link)
    assert status == 400
    status, page = await follow(fresh)
    assert status == 200, page


async def test_registration_requires_a_verified_email(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(
        homeserver_client,
        mailbox,
        registrations_require_3pid=["email"],
        **{"email.enable_notifs": True},
    )
    status, challenge = await post(client, "/register", {"username": "frank", "password": "pw"})
    assert status == 401
    assert challenge["flows"] == [{"stages": ["m.login.email.identity"]}]
    sid = await request_token(client, REGISTER_TOKEN, "frank@example.org")
    link = link_in(await mailbox.wait_for("frank@example.org"))
    assert "/_matrix/client/unstable/registration/email/submit_token?" in link
    auth = {
        "type": "m.login.email.identity",
        "threepid_creds": {"sid": sid, "client_secret": SECRET},
        "session": challenge["session"],
    }
    body = {"username": "frank", "password": "pw", "auth": auth}
    status, result = await post(client, "/register", body)
    assert (status, result["errcode"]) == (401, "M_THREEPID_AUTH_FAILED")
    assert (await follow(link))[0] == 200
    status, result = await post(client, "/register", body)
    assert status == 200, result
    headers = auth_header(result["access_token"])
    resp = await client.get(f"{CLIENT_V3}/account/3pid", headers=headers)
    assert [t["address"] for t in (await resp.json())["threepids"]] == ["frank@example.org"]
    # notif_for_new_users: the new account's address gets an email pusher.
    resp = await client.get(f"{CLIENT_V3}/pushers", headers=headers)
    [pusher] = (await resp.json())["pushers"]
    assert (pusher["kind"], pusher["app_id"], pusher["pushkey"]) == (
        "email",
        "m.email",
        "frank@example.org",
    )
    # The same validation cannot register a second account.
    status, challenge = await post(client, "/register", {"username": "frank2", "password": "pw"})
    auth["session"] = challenge["session"]
    status, result = await post(
        client, "/register", {"username": "frank2", "password": "pw", "auth": auth}
    )
    assert (status, result["errcode"]) == (401, "M_THREEPID_AUTH_FAILED")


async def request_from(client: TestClient[Any, Any], source: str, path: str, address: str) -> int:
    """A requestToken from another loopback address (Linux routes all of 127/8 to lo)."""
    url = str(client.make_url(f"{CLIENT_V3}{path}"))
    body = {"client_secret": SECRET, "email": address, "send_attempt": 1}
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, json=body) as resp,
    ):
        return resp.status


async def test_request_token_is_rate_limited(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(homeserver_client, mailbox, **{"rate_limits.enabled": True})
    # Synapse's rc_3pid_validation defaults: a burst of 5 per client address...
    statuses = [
        await request_from(client, "127.0.0.1", RESET_TOKEN, f"x{n}@example.org") for n in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    # ...and per email address, whoever asks: one address cannot be flooded with mail.
    for n in range(5):
        assert await request_from(client, f"127.0.0.{n + 2}", RESET_TOKEN, "y@example.org") == 200
    assert await request_from(client, "127.0.0.9", RESET_TOKEN, "y@example.org") == 429
    assert await request_from(client, "127.0.0.9", RESET_TOKEN, "z@example.org") == 200


def test_an_unusable_smtp_server_stops_the_start(tmp_path: Path, postgres: PostgresServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": postgres.create_database()},
                "email": {
                    "smtp_host": "127.0.0.1",
                    "smtp_port": free_port(),
                    "notif_from": "a@b.org",
                },
            }
        )
    )
    result = cli(
        "run",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "d"),
        "--port",
        str(free_port()),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeserver: error: email: cannot use the SMTP server 127.0.0.1:")


async def test_email_notifications_of_unread_messages(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(
        homeserver_client,
        mailbox,
        **{
            "email.enable_notifs": True,
            "email.notif_delay_before_mail": "2s",
            "email.client_base_url": "https://chat.example.org",
        },
    )
    alice_account = await register_user(client, "alice")
    await add_email(client, mailbox, alice_account, "alice@example.org")
    alice = RoomUser(client, alice_account["user_id"], alice_account["access_token"])
    pusher = {
        "kind": "email",
        "app_id": "m.email",
        "pushkey": "alice@example.org",
        "app_display_name": "Email",
        "device_display_name": "alice@example.org",
        "lang": "en",
        "data": {},
    }
    status, body = await post(
        client,
        "/pushers/set",
        {**pusher, "pushkey": "else@example.org"},
        alice_account["access_token"],
    )
    assert (status, body["errcode"]) == (400, "M_THREEPID_NOT_FOUND")
    await alice.ok("POST", "/pushers/set", pusher)
    bob = await RoomUser.make(client, "bob")
    room_id = await bob.create_room(name="Garden", invite=[alice.user_id])
    await alice.join(room_id)
    await bob.say(room_id, "hello alice")
    await bob.say(room_id, "are you <there>?")
    mail = await mailbox.wait_for("alice@example.org", 2)
    assert mail["Subject"] == "[Matrix] You have messages on Matrix in the Garden room..."
    text, html = text_of(mail), html_of(mail)
    link = f"https://chat.example.org/#/room/{room_id}"
    assert "hello alice" in text and "are you <there>?" in text and link in text
    assert "are you &lt;there&gt;?" in html and f'href="{link}"' in html
    # What alice reads before the delay is not mailed; what she leaves unread is.
    read = await bob.say(room_id, "read in time")
    await alice.ok("POST", f"/rooms/{room_id}/receipt/m.read/{read}")
    await bob.say(room_id, "left unread")
    mail = await mailbox.wait_for("alice@example.org", 3)
    assert "left unread" in text_of(mail) and "read in time" not in text_of(mail)
    assert f"a message on Matrix from {bob.user_id} in the Garden room" in mail["Subject"]
    # An invite left unanswered is mailed too.
    attic = await bob.create_room(name="Attic", invite=[alice.user_id])
    mail = await mailbox.wait_for("alice@example.org", 4)
    expected = f"[Matrix] {bob.user_id} has invited you to join the Attic room on Matrix..."
    # (A subject this long is folded onto the next line; Python's parser keeps the fold's
    # leading space, which mail clients drop.)
    assert mail["Subject"].strip() == expected
    assert f"https://chat.example.org/#/room/{attic}" in text_of(mail)
    # The unsubscribe link (and the mail client's one-click POST to it) removes the pusher.
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert f"Unsubscribe: {unsubscribe}" in text_of(mail)
    status, page = await follow(unsubscribe.replace("token=", "token=x"), "POST")
    assert status == 400
    status, page = await follow(unsubscribe)
    assert status == 200 and "<form" in page  # a click first, for link scanners
    assert (await alice.get("/v3/pushers"))[1]["pushers"] != []
    status, page = await follow(unsubscribe, "POST", {"List-Unsubscribe": "One-Click"})
    assert status == 200, page
    assert (await alice.get("/v3/pushers"))[1] == {"pushers": []}
    # The email pusher is the account's: logging out the device that set it keeps it.
    await alice.ok("POST", "/pushers/set", pusher)
    other = await login_user(client, "alice")
    await alice.ok("POST", "/logout")
    resp = await client.get(f"{CLIENT_V3}/pushers", headers=auth_header(other["access_token"]))
    assert [p["pushkey"] for p in (await resp.json())["pushers"]] == ["alice@example.org"]


async def test_next_link_and_changes_switched_off(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(homeserver_client, mailbox, enable_3pid_changes=False)
    gina = await register_user(client, "gina")
    token = gina["access_token"]
    resp = await client.get(f"{CLIENT_V3}/capabilities", headers=auth_header(token))
    assert (await resp.json())["capabilities"]["m.3pid_changes"] == {"enabled": False}
    body = {"client_secret": SECRET, "email": "gina@example.org", "send_attempt": 1}
    status, result = await post(client, ADD_TOKEN, body, token)
    assert (status, result["errcode"]) == (400, "M_FORBIDDEN")
    # Registration still validates addresses; the page sends the browser on to
    # next_link, with the session id added.
    body["next_link"] = "https://app.example.org/done?step=2"
    status, result = await post(client, REGISTER_TOKEN, body)
    assert status == 200
    link = link_in(await mailbox.wait_for("gina@example.org"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(link, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        assert (
            resp.headers["Location"] == f"https://app.example.org/done?step=2&sid={result['sid']}"
        )
    status, page = await follow(link)
    assert status == 400 and "already used" in page
    body["next_link"] = "javascript:alert(1)"
    status, result = await post(client, REGISTER_TOKEN, {**body, "send_attempt": 2})
    assert (status, result["errcode"]) == (400, "M_INVALID_PARAM")


async def test_deactivation_frees_the_address(
    homeserver_client: Callable[..., Any], mailbox: Mailbox
) -> None:
    client = await mail_server(homeserver_client, mailbox)
    hank = await register_user(client, "hank")
    await add_email(client, mailbox, hank, "hank@example.org")
    status, challenge = await post(client, "/account/deactivate", {}, hank["access_token"])
    auth = {"type": "m.login.password", "user": "hank", "password": "secret pw"}
    status, _ = await post(
        client,
        "/account/deactivate",
        {"auth": {**auth, "session": challenge["session"]}},
        hank["access_token"],
    )
    assert status == 200
    status, body = await post(client, "/login", email_login("hank@example.org", "secret pw"))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    ivy = await register_user(client, "ivy")
    await add_email(client, mailbox, ivy, "hank@example.org")
