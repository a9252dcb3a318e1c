"""/pushrules: the merged ruleset, user rules, changes to defaults, and sync delivery."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

RULES = "/v3/pushrules/global"


async def _user(homeserver_client: Any, name: str = "alice") -> RoomUser:
    client: TestClient[Any, Any] = await homeserver_client(**{"rate_limits.enabled": False})
    return await RoomUser.make(client, name)


async def request(user: RoomUser, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await call(user.client, method, path, body, headers=user.headers)


def ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


async def test_defaults_are_served_under_v3_and_r0(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    status, body = await request(alice, "GET", "/v3/pushrules/")
    assert status == 200
    ruleset = body["global"]
    assert ids(ruleset, "override")[:2] == [".m.rule.master", ".m.rule.suppress_notices"]
    assert ".m.rule.is_user_mention" in ids(ruleset, "override")
    assert ids(ruleset, "underride")[-1] == ".m.rule.encrypted"
    [content] = ruleset["content"]
    assert content["pattern"] == "alice" and content["default"] is True
    mention = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == alice.user_id
    status, r0 = await request(alice, "GET", "/r0/pushrules/global/")
    assert status == 200 and r0 == ruleset
    status, master = await request(alice, "GET", f"{RULES}/override/.m.rule.master")
    assert status == 200 and master["enabled"] is False and master["default"] is True


async def test_requires_authentication(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    status, body = await call(alice.client, "GET", "/v3/pushrules/")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


async def test_user_rules_are_created_ordered_and_deleted(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    for rule_id in ("one", "two"):
        status, _ = await request(
            alice, "PUT", f"{RULES}/content/{rule_id}", {"pattern": rule_id, "actions": ["notify"]}
        )
        assert status == 200
    # Without before/after, a new rule is the most important user rule.
    _, ruleset = await request(alice, "GET", "/v3/pushrules/global/")
    assert ids(ruleset, "content") == ["two", "one", ".m.rule.contains_user_name"]
    status, _ = await call(
        alice.client,
        "PUT",
        f"{RULES}/content/three",
        {"pattern": "x", "actions": []},
        headers=alice.headers,
        params={"after": "two"},
    )
    assert status == 200
    status, _ = await call(
        alice.client,
        "PUT",
        f"{RULES}/content/zero",
        {"pattern": "x", "actions": []},
        headers=alice.headers,
        params={"before": "two"},
    )
    assert status == 200
    _, ruleset = await request(alice, "GET", "/v3/pushrules/global/")
    assert ids(ruleset, "content")[:4] == ["zero", "two", "three", "one"]
    status, rule = await request(alice, "GET", f"{RULES}/content/two")
    assert status == 200
    assert rule == {
        "rule_id": "two",
        "default": False,
        "enabled": True,
        "pattern": "two",
        "actions": ["notify"],
    }
    # Updating keeps the place; a user override rule comes after the master rule only.
    status, _ = await request(
        alice, "PUT", f"{RULES}/override/mine", {"conditions": [], "actions": ["notify"]}
    )
    assert status == 200
    _, ruleset = await request(alice, "GET", "/v3/pushrules/global/")
    assert ids(ruleset, "override")[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]
    assert (await request(alice, "DELETE", f"{RULES}/content/two"))[0] == 200
    status, body = await request(alice, "GET", f"{RULES}/content/two")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await request(alice, "DELETE", f"{RULES}/content/two")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_room_and_sender_rules_have_no_conditions(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    room = "!abc:test.local"
    assert (await request(alice, "PUT", f"{RULES}/room/{room}", {"actions": []}))[0] == 200
    status, rule = await request(alice, "GET", f"{RULES}/room/{room}")
    assert status == 200
    assert rule == {"rule_id": room, "default": False, "enabled": True, "actions": []}


async def test_enabled_and_actions_of_user_and_default_rules(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    master = f"{RULES}/override/.m.rule.master"
    assert (await request(alice, "PUT", f"{master}/enabled", {"enabled": True}))[0] == 200
    assert await request(alice, "GET", f"{master}/enabled") == (200, {"enabled": True})
    message = f"{RULES}/underride/.m.rule.message"
    new_actions = ["notify", {"set_tweak": "sound", "value": "default"}]
    assert (await request(alice, "PUT", f"{message}/actions", {"actions": new_actions}))[0] == 200
    assert await request(alice, "GET", f"{message}/actions") == (200, {"actions": new_actions})
    status, rule = await request(alice, "GET", message)
    assert status == 200
    assert rule["default"] is True and rule["conditions"][0]["pattern"] == "m.room.message"
    await request(alice, "PUT", f"{RULES}/sender/@bob:test.local", {"actions": ["notify"]})
    sender = f"{RULES}/sender/@bob:test.local/enabled"
    assert (await request(alice, "PUT", sender, {"enabled": False}))[0] == 200
    assert await request(alice, "GET", sender) == (200, {"enabled": False})
    # Replacing a user rule enables it again (rules are created enabled).
    await request(alice, "PUT", f"{RULES}/sender/@bob:test.local", {"actions": ["notify"]})
    assert await request(alice, "GET", sender) == (200, {"enabled": True})
    # Other users do not see alice's changes.
    bob = await RoomUser.make(alice.client, "bob")
    assert await request(bob, "GET", f"{master}/enabled") == (200, {"enabled": False})


async def test_bad_input_gets_the_specs_errors(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", f"{RULES}/override/.m.rule.master", {"actions": []}, 400, "M_UNKNOWN"),
        ("PUT", f"{RULES}/content/.mine", {"pattern": "x", "actions": []}, 400, "M_UNKNOWN"),
        ("PUT", f"{RULES}/content/a%5Cb", {"pattern": "x", "actions": []}, 400, "M_UNKNOWN"),
        ("DELETE", f"{RULES}/override/.m.rule.master", None, 400, "M_UNKNOWN"),
        ("DELETE", f"{RULES}/override/.m.rule.nope", None, 404, "M_NOT_FOUND"),
        ("GET", f"{RULES}/nonsense/x", None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/nonsense/x", {"actions": []}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/content/x", {"actions": []}, 400, "M_MISSING_PARAM"),
        ("PUT", f"{RULES}/content/x", {"pattern": 3, "actions": []}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/override/x", {"conditions": []}, 400, "M_MISSING_PARAM"),
        ("PUT", f"{RULES}/override/x", {"actions": "notify"}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/override/x", {"actions": ["explode"]}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/override/x", {"actions": [], "conditions": [1]}, 400, "M_INVALID_PARAM"),
        ("GET", f"{RULES}/override/absent", None, 404, "M_NOT_FOUND"),
        ("GET", f"{RULES}/content/.m.rule.master", None, 404, "M_NOT_FOUND"),
        ("GET", f"{RULES}/override/absent/enabled", None, 404, "M_NOT_FOUND"),
        ("PUT", f"{RULES}/override/absent/enabled", {"enabled": True}, 404, "M_NOT_FOUND"),
        ("PUT", f"{RULES}/override/absent/actions", {"actions": []}, 404, "M_NOT_FOUND"),
        ("PUT", f"{RULES}/override/.m.rule.master/enabled", {}, 400, "M_MISSING_PARAM"),
        (
            "PUT",
            f"{RULES}/override/.m.rule.master/enabled",
            {"enabled": "yes"},
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            f"{RULES}/override/.m.rule.master/actions",
            {"actions": [7]},
            400,
            "M_INVALID_PARAM",
        ),
    ]
    for method, path, body, status, errcode in cases:
        got_status, got = await request(alice, method, path, body)
        assert (got_status, got.get("errcode")) == (status, errcode), (method, path, got)
    resp = await alice.client.put(
        f"/_matrix/client{RULES}/override/x", data=b"{not json", headers=alice.headers
    )
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"
    for anchor, status, errcode in (
        ("missing", 404, "M_NOT_FOUND"),
        (".m.rule.master", 400, "M_UNKNOWN"),
    ):
        got_status, got = await call(
            alice.client,
            "PUT",
            f"{RULES}/override/x",
            {"actions": []},
            headers=alice.headers,
            params={"before": anchor},
        )
        assert (got_status, got["errcode"]) == (status, errcode)
    # Nothing was stored by any refused request.
    _, ruleset = await request(alice, "GET", "/v3/pushrules/global/")
    assert ids(ruleset, "override")[:2] == [".m.rule.master", ".m.rule.suppress_notices"]
    assert ruleset["override"][0]["enabled"] is False


async def test_sync_delivers_push_rules_and_wakes_on_change(homeserver_client: Any) -> None:
    alice = await _user(homeserver_client)
    status, first = await alice.get("/v3/sync")
    assert status == 200
    [event] = [e for e in first["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert ids(event["content"]["global"], "override")[0] == ".m.rule.master"
    since = first["next_batch"]

    async def change() -> None:
        await asyncio.sleep(0.3)
        await request(alice, "PUT", f"{RULES}/room/!x:test.local", {"actions": []})

    task = asyncio.create_task(change())
    status, second = await alice.get("/v3/sync", since=since, timeout="10000")
    await task
    assert status == 200
    [event] = [e for e in second["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert ids(event["content"]["global"], "room") == ["!x:test.local"]
    # Clients cannot write m.push_rules as plain account data.
    status, body = await call(
        alice.client,
        "PUT",
        f"/v3/user/{alice.user_id}/account_data/m.push_rules",
        {"global": {}},
        headers=alice.headers,
    )
    assert status == 405 and body["errcode"] == "M_BAD_JSON"


async def test_postcontent_is_a_known_kind_without_client_rules(homeserver_client: Any) -> None:
    """Clients toggling thread notifications (MSC4306) ask for postcontent rules: the
    kind is known (a missing rule is 404, not an unknown kind), but clients add none."""
    alice = await _user(homeserver_client)
    _, body = await request(alice, "GET", "/v3/pushrules/")
    assert body["global"]["postcontent"] == []
    assert list(body["global"]).index("postcontent") == 2  # after content, before room
    rule = f"{RULES}/postcontent/.io.element.msc4306.rule.unsubscribed_thread"
    for method, path, payload in [
        ("GET", rule, None),
        ("GET", f"{rule}/enabled", None),
        ("PUT", f"{rule}/enabled", {"enabled": False}),
        ("DELETE", rule, None),
    ]:
        status, error = await request(alice, method, path, payload)
        assert (status, error["errcode"]) == (404, "M_NOT_FOUND"), (method, path)
    status, error = await request(
        alice, "PUT", f"{RULES}/postcontent/mine", {"actions": [], "conditions": []}
    )
    assert (status, error["errcode"]) == (400, "M_INVALID_PARAM")
    status, error = await request(alice, "GET", f"{RULES}/nonsense/mine")
    assert (status, error["errcode"]) == (400, "M_INVALID_PARAM")
