"""Admin calls whose answers Ketesa's pages read field by field, found by driving a
Ketesa build in a browser against this server: each test makes the call the page
makes and checks the part of the answer the page shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.accounts.auth import hash_token, new_token
from homeserver.services.core.clock import now_ms
from homeserver.storage.accounts import devices, tokens
from homeserver.storage.sso import sso
from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


@pytest.fixture
async def server(homeserver_client: Callable[..., Any]) -> tuple[Client, str]:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    return client, admin_token


async def add_device(client: Client, user_id: str, device_id: str) -> str:
    """Another device of the user, with its own access token."""
    hs = client.server.app[HOMESERVER]
    token = new_token("syt")
    async with hs.db.pool.connection() as conn:
        await devices.upsert_device(conn, user_id, device_id, None, now_ms())
        await tokens.insert_access_token(
            conn, hash_token(token), user_id, device_id, now_ms=now_ms()
        )
    return token


async def admin_get(client: Client, path: str, token: str) -> Any:
    resp = await client.get(path, headers=auth_header(token))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_whois_lists_every_connection_under_one_entry(server: tuple[Client, str]) -> None:
    """Ketesa's connections tab reads `devices[""].sessions[0].connections`, the shape
    Synapse's admin whois has: keyed by device it showed no connection at all."""
    client, admin_token = server
    user_id, phone_token = await make_user(client, "carol")
    laptop_token = await add_device(client, user_id, "LAPTOP")
    await add_device(client, user_id, "NEVERUSED")
    for token, agent in ((phone_token, "phone-agent"), (laptop_token, "laptop-agent")):
        headers = {**auth_header(token), "User-Agent": agent}
        resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=headers)
        assert resp.status == 200

    whois = await admin_get(client, f"{V1}/whois/{user_id}", admin_token)
    assert whois["user_id"] == user_id
    assert list(whois["devices"]) == [""]
    sessions = whois["devices"][""]["sessions"]
    assert len(sessions) == 1
    connections = sessions[0]["connections"]
    assert [c["user_agent"] for c in connections] == ["laptop-agent", "phone-agent"]
    assert all(c["ip"] and c["last_seen"] > 0 for c in connections)

    # The client API's whois keeps the spec's shape: one entry per device.
    own = await admin_get(client, f"{CLIENT_V3}/admin/whois/{user_id}", phone_token)
    assert set(own["devices"]) == {"TESTDEVICE", "LAPTOP", "NEVERUSED"}
    assert own["devices"]["NEVERUSED"]["sessions"] == [{"connections": []}]
    laptop = own["devices"]["LAPTOP"]["sessions"][0]["connections"]
    assert [c["user_agent"] for c in laptop] == ["laptop-agent"]


async def test_whois_of_a_user_never_seen(server: tuple[Client, str]) -> None:
    client, admin_token = server
    user_id, _ = await make_user(client, "dormant")
    whois = await admin_get(client, f"{V1}/whois/{user_id}", admin_token)
    assert whois == {"user_id": user_id, "devices": {"": {"sessions": [{"connections": []}]}}}


async def test_room_details_count_local_devices_and_forgotten(server: tuple[Client, str]) -> None:
    """Ketesa's room page shows `joined_local_devices` ("Local devices"), which
    Synapse's room details carry with `forgotten`; both were missing."""
    client, admin_token = server
    owner = await RoomUser.make(client, "owner")
    guest = await RoomUser.make(client, "guest")
    await add_device(client, guest.user_id, "SECOND")
    room_id = await owner.create_room(name="Devices", preset="public_chat")
    await guest.join(room_id)

    details = await admin_get(client, f"{V1}/rooms/{room_id}", admin_token)
    assert details["joined_local_members"] == 2
    assert details["joined_local_devices"] == 3
    assert details["forgotten"] is False

    await guest.leave(room_id)
    await guest.ok("POST", f"/rooms/{room_id}/forget")
    details = await admin_get(client, f"{V1}/rooms/{room_id}", admin_token)
    assert (details["joined_local_devices"], details["forgotten"]) == (1, False)

    await owner.leave(room_id)
    await owner.ok("POST", f"/rooms/{room_id}/forget")
    details = await admin_get(client, f"{V1}/rooms/{room_id}", admin_token)
    assert (details["joined_local_devices"], details["forgotten"]) == (0, True)

    # The listing stays as Synapse's: these two are on the room's own page only.
    listing = await admin_get(client, f"{V1}/rooms", admin_token)
    assert "joined_local_devices" not in listing["rooms"][0]


async def test_sso_tab_reads_and_sets_external_ids(server: tuple[Client, str]) -> None:
    """Ketesa's SSO tab shows and saves `external_ids` of GET/PUT /v2/users/{id}, and
    its "find user" asks /auth_providers/{provider}/users/{id}: the links were always
    shown empty, refused on save, and the lookup was 404 M_UNRECOGNIZED."""
    client, admin_token = server
    user_id, _ = await make_user(client, "sso")
    other_id, _ = await make_user(client, "other")
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        await sso.link_external_id(conn, "oidc-corp", "subject-1", user_id)
    account = await admin_get(client, f"{V2}/users/{user_id}", admin_token)
    assert account["external_ids"] == [{"auth_provider": "oidc-corp", "external_id": "subject-1"}]

    lookup = await admin_get(client, f"{V1}/auth_providers/oidc-corp/users/subject-1", admin_token)
    assert lookup == {"user_id": user_id}
    resp = await client.get(
        f"{V1}/auth_providers/oidc-corp/users/nobody", headers=auth_header(admin_token)
    )
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")

    # Saving replaces every link of the account.
    links = [
        {"auth_provider": "oidc-corp", "external_id": "subject-2"},
        {"auth_provider": "github", "external_id": "42"},
    ]
    resp = await client.put(
        f"{V2}/users/{user_id}", json={"external_ids": links}, headers=auth_header(admin_token)
    )
    assert resp.status == 200, await resp.text()
    saved = (await resp.json())["external_ids"]
    assert sorted(saved, key=lambda link: link["auth_provider"]) == sorted(
        links, key=lambda link: link["auth_provider"]
    )
    lookup = await admin_get(client, f"{V1}/auth_providers/github/users/42", admin_token)
    assert lookup == {"user_id": user_id}
    resp = await client.get(
        f"{V1}/auth_providers/oidc-corp/users/subject-1", headers=auth_header(admin_token)
    )
    assert resp.status == 404

    # A link of another account is refused, and nothing of the request is kept.
    resp = await client.put(
        f"{V2}/users/{other_id}",
        json={"displayname": "Other", "external_ids": [links[1]]},
        headers=auth_header(admin_token),
    )
    assert resp.status == 409
    other = await admin_get(client, f"{V2}/users/{other_id}", admin_token)
    assert other["external_ids"] == [] and other["displayname"] != "Other"

    resp = await client.put(
        f"{V2}/users/{user_id}",
        json={"external_ids": [{"auth_provider": "github"}]},
        headers=auth_header(admin_token),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")

    resp = await client.put(
        f"{V2}/users/{user_id}", json={"external_ids": []}, headers=auth_header(admin_token)
    )
    assert resp.status == 200 and (await resp.json())["external_ids"] == []


async def test_saving_a_shadow_banned_or_suspended_account(server: tuple[Client, str]) -> None:
    """Ketesa sets these flags through their own endpoints, then saves the whole
    account with PUT /v2/users/{id}, flags included: that PUT was refused (400), so the
    save failed and no later edit of such an account could be saved."""
    client, admin_token = server
    user_id, _ = await make_user(client, "troll")
    headers = auth_header(admin_token)
    resp = await client.post(f"{V1}/users/{user_id}/shadow_ban", headers=headers)
    assert resp.status == 200
    resp = await client.put(f"{V1}/suspend/{user_id}", json={"suspend": True}, headers=headers)
    assert resp.status == 200
    record = await admin_get(client, f"{V2}/users/{user_id}", admin_token)
    assert (record["shadow_banned"], record["suspended"]) == (True, True)

    resp = await client.put(
        f"{V2}/users/{user_id}", json={**record, "displayname": "Renamed"}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    saved = await resp.json()
    assert saved["displayname"] == "Renamed"
    assert (saved["shadow_banned"], saved["suspended"]) == (True, True)

    # A flag this PUT would change is still refused, not silently dropped.
    resp = await client.put(f"{V2}/users/{user_id}", json={"shadow_banned": False}, headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")
    record = await admin_get(client, f"{V2}/users/{user_id}", admin_token)
    assert record["shadow_banned"] is True
