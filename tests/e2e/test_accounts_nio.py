"""Accounts as matrix-nio uses them: register, two devices, profile, logout."""

from __future__ import annotations

from nio import (
    AsyncClient,
    DevicesResponse,
    LoginResponse,
    LogoutResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    RegisterResponse,
    WhoamiResponse,
)


async def test_register_two_devices_logout_one(running_homeserver: str) -> None:
    registrar = AsyncClient(running_homeserver, "alice")
    laptop = AsyncClient(running_homeserver, "@alice:localhost")
    phone = AsyncClient(running_homeserver, "@alice:localhost")
    try:
        registered = await registrar.register("alice", "correct horse", "Registrar")
        assert isinstance(registered, RegisterResponse), registered
        assert registered.user_id == "@alice:localhost"

        first = await laptop.login("correct horse", device_name="Laptop")
        assert isinstance(first, LoginResponse), first
        second = await phone.login("correct horse", device_name="Phone")
        assert isinstance(second, LoginResponse), second
        assert first.device_id != second.device_id

        devices = await laptop.devices()
        assert isinstance(devices, DevicesResponse), devices
        names = {device.id: device.display_name for device in devices.devices}
        assert names[first.device_id] == "Laptop"
        assert names[second.device_id] == "Phone"

        renamed = await laptop.set_displayname("Alice A.")
        assert isinstance(renamed, ProfileSetDisplayNameResponse), renamed
        shown = await phone.get_displayname()
        assert isinstance(shown, ProfileGetDisplayNameResponse), shown
        assert shown.displayname == "Alice A."

        logged_out = await laptop.logout()
        assert isinstance(logged_out, LogoutResponse), logged_out
        whoami = await phone.whoami()
        assert isinstance(whoami, WhoamiResponse), whoami
        assert whoami.device_id == second.device_id
        devices = await phone.devices()
        assert isinstance(devices, DevicesResponse), devices
        assert first.device_id not in {device.id for device in devices.devices}
    finally:
        for client in (registrar, laptop, phone):
            await client.close()
