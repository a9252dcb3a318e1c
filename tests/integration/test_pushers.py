"""/pushers and /pushers/set: creating, updating, appending, deleting, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, auth_header, call, login_user, register_user

URL = "https://push.example.org/_matrix/push/v1/notify"


def pusher(**fields: Any) -> dict[str, Any]:
    body = {
        "kind": "http",
        "app_id": "org.example.app.android",
        "pushkey": "device-token",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": URL, "format": "event_id_only", "custom": 1},
    }
    body.update(fields)
    return body


async def users(homeserver_client: Callable[..., Any]) -> tuple[RoomUser, RoomUser]:
    client: TestClient[Any, Any] = await homeserver_client(**{"rate_limits.enabled": False})
    return await RoomUser.make(client, "alice"), await RoomUser.make(client, "bob")


async def listed(user: RoomUser) -> list[dict[str, Any]]:
    status, body = await user.get("/v3/pushers")
    assert status == 200
    result: list[dict[str, Any]] = body["pushers"]
    return result


async def test_set_update_list_and_delete(homeserver_client: Callable[..., Any]) -> None:
    alice, bob = await users(homeserver_client)
    assert await listed(alice) == []
    await alice.ok("POST", "/pushers/set", pusher(profile_tag="tag"))
    [stored] = await listed(alice)
    assert stored == {
        "pushkey": "device-token",
        "kind": "http",
        "app_id": "org.example.app.android",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "profile_tag": "tag",
        "data": {"url": URL, "format": "event_id_only", "custom": 1},
    }
    # Same app_id and pushkey: an update, not a second pusher.
    await alice.ok("POST", "/pushers/set", pusher(device_display_name="New phone"))
    [updated] = await listed(alice)
    assert updated["device_display_name"] == "New phone"
    await alice.ok("POST", "/pushers/set", pusher(pushkey="other"))
    assert len(await listed(alice)) == 2
    assert await listed(bob) == []
    await alice.ok(
        "POST", "/pushers/set", {"kind": None, "app_id": pusher()["app_id"], "pushkey": "other"}
    )
    assert [p["pushkey"] for p in await listed(alice)] == ["device-token"]


async def test_append_keeps_other_users_pushers(homeserver_client: Callable[..., Any]) -> None:
    alice, bob = await users(homeserver_client)
    await alice.ok("POST", "/pushers/set", pusher())
    await bob.ok("POST", "/pushers/set", pusher(append=True))
    assert len(await listed(alice)) == 1 and len(await listed(bob)) == 1
    # Without append, the device's pusher moves to bob alone.
    await bob.ok("POST", "/pushers/set", pusher())
    assert await listed(alice) == [] and len(await listed(bob)) == 1


async def test_bad_input(homeserver_client: Callable[..., Any]) -> None:
    alice, _ = await users(homeserver_client)
    base = pusher()
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in base.items() if k != "kind"}, "M_MISSING_PARAM"),
        ({k: v for k, v in base.items() if k != "app_id"}, "M_MISSING_PARAM"),
        ({k: v for k, v in base.items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in base.items() if k != "lang"}, "M_MISSING_PARAM"),
        ({k: v for k, v in base.items() if k != "data"}, "M_MISSING_PARAM"),
        (pusher(data={"format": "event_id_only"}), "M_MISSING_PARAM"),
        (pusher(data={"url": "https://push.example.org/notify"}), "M_INVALID_PARAM"),
        (pusher(data={"url": "ftp://push.example.org/_matrix/push/v1/notify"}), "M_INVALID_PARAM"),
        (pusher(data={"url": 5}), "M_INVALID_PARAM"),
        (pusher(data={"url": URL, "format": "full"}), "M_INVALID_PARAM"),
        (pusher(data="x"), "M_INVALID_PARAM"),
        (pusher(kind="email"), "M_INVALID_PARAM"),
        (pusher(app_id="a" * 65), "M_INVALID_PARAM"),
        (pusher(pushkey="k" * 513), "M_INVALID_PARAM"),
        (pusher(app_id=7), "M_INVALID_PARAM"),
        (pusher(append="yes"), "M_INVALID_PARAM"),
    ]
    for body, errcode in cases:
        status, got = await call(
            alice.client, "POST", "/v3/pushers/set", body, headers=alice.headers
        )
        assert (status, got.get("errcode")) == (400, errcode), body
    assert await listed(alice) == []
    status, got = await call(alice.client, "GET", "/v3/pushers")
    assert status == 401
    # http gateways are accepted as well as https ones.
    await alice.ok(
        "POST", "/pushers/set", pusher(data={"url": "http://10.0.0.1:5000/_matrix/push/v1/notify"})
    )
    assert len(await listed(alice)) == 1


async def _pushkeys(client: TestClient[Any, Any], token: str) -> list[str]:
    status, body = await call(client, "GET", "/v3/pushers", headers=auth_header(token))
    assert status == 200
    return sorted(p["pushkey"] for p in body["pushers"])


async def test_password_change_drops_other_sessions_pushers(
    homeserver_client: Callable[..., Any],
) -> None:
    """Logging the other devices out (logout_devices defaults to true) revokes their
    tokens, and with them the pushers they set: those phones stop being notified."""
    client: TestClient[Any, Any] = await homeserver_client(
        open_registration=True, **{"rate_limits.enabled": False}
    )
    main = (await register_user(client, "alice", "old"))["access_token"]
    phone = (await login_user(client, "alice", "old"))["access_token"]
    for token, key in ((main, "main-key"), (phone, "phone-key")):
        status, _ = await call(
            client, "POST", "/v3/pushers/set", pusher(pushkey=key), headers=auth_header(token)
        )
        assert status == 200
    assert await _pushkeys(client, main) == ["main-key", "phone-key"]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "old",
    }
    status, _ = await call(
        client,
        "POST",
        "/v3/account/password",
        {"new_password": "new", "auth": auth},
        headers=auth_header(main),
    )
    assert status == 200
    assert await _pushkeys(client, main) == ["main-key"]


async def test_deleting_a_device_drops_its_pushers(homeserver_client: Callable[..., Any]) -> None:
    client: TestClient[Any, Any] = await homeserver_client(
        open_registration=True, **{"rate_limits.enabled": False}
    )
    main = (await register_user(client, "alice", "pw"))["access_token"]
    phone = await login_user(client, "alice", "pw", device_id="PHONE")
    for token, key in ((main, "main-key"), (phone["access_token"], "phone-key")):
        status, _ = await call(
            client, "POST", "/v3/pushers/set", pusher(pushkey=key), headers=auth_header(token)
        )
        assert status == 200
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
    }
    status, _ = await call(
        client, "DELETE", "/v3/devices/PHONE", {"auth": auth}, headers=auth_header(main)
    )
    assert status == 200
    assert await _pushkeys(client, main) == ["main-key"]


async def test_a_refreshed_sessions_pushers_go_with_it(
    homeserver_client: Callable[..., Any],
) -> None:
    """A pusher set before a token refresh belongs to the session, which goes on under
    the new token: logging the other devices out still drops it."""
    client: TestClient[Any, Any] = await homeserver_client(
        open_registration=True, **{"rate_limits.enabled": False}
    )
    main = (await register_user(client, "alice", "old"))["access_token"]
    phone = await login_user(client, "alice", "old", refresh_token=True)
    status, _ = await call(
        client,
        "POST",
        "/v3/pushers/set",
        pusher(pushkey="phone-key"),
        headers=auth_header(phone["access_token"]),
    )
    assert status == 200
    status, _ = await call(client, "POST", "/v3/refresh", {"refresh_token": phone["refresh_token"]})
    assert status == 200
    assert await _pushkeys(client, main) == ["phone-key"]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "old",
    }
    status, _ = await call(
        client,
        "POST",
        "/v3/account/password",
        {"new_password": "new", "auth": auth},
        headers=auth_header(main),
    )
    assert status == 200
    assert await _pushkeys(client, main) == []
