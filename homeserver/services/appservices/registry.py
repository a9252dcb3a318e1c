"""Application services (bridges): their registration files, the namespaces of users,
aliases and rooms they claim, and which rooms and events they are interested in.

Registration files are YAML in the format Synapse reads (`id`, `url`, `as_token`,
`hs_token`, `sender_localpart`, `namespaces`, `rate_limited`, `protocols`,
`receive_ephemeral`), so a bridge's generated `registration.yaml` works unchanged. They
are read once at start; a bad one stops the server with one line naming the file.

Namespace regexes are matched from the start of the id (not necessarily to its end), as
bridges written against Synapse expect (`@telegram_.*` without a server part works).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from homeserver.config import ConfigError
from homeserver.services.accounts.accounts import is_valid_localpart
from homeserver.services.core.errors import ServiceError

LOGIN_TYPE = "m.login.application_service"
NAMESPACE_KINDS = ("users", "aliases", "rooms")
# MSC2409's name for `receive_ephemeral`, as bridges still write it.
EPHEMERAL_UNSTABLE = "de.sorunome.msc2409.push_ephemeral"


@dataclass(frozen=True, slots=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


@dataclass(frozen=True)
class AppService:
    """One registered application service."""

    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # the full user id of sender_localpart
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False
    # Registered with MSC2409's key: transactions repeat `ephemeral` under its name too.
    ephemeral_unstable: bool = False

    def is_interested_in_user(self, user_id: str) -> bool:
        """The AS's own sender counts as in its namespace: it may act as it and hears of it."""
        return user_id == self.sender or any(ns.matches(user_id) for ns in self.users)

    def owns_user_exclusively(self, user_id: str) -> bool:
        return any(ns.exclusive and ns.matches(user_id) for ns in self.users)

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def owns_alias_exclusively(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_interested_in_room_id(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What interest in a room depends on: its local members and its aliases."""

    members: Sequence[str]
    aliases: Sequence[str]


def is_interested_in_event(
    service: AppService,
    room_id: str,
    sender: str,
    event_type: str,
    state_key: str | None,
    facts: RoomFacts,
) -> bool:
    """Whether an event goes to the AS: its sender, the user a membership event is about,
    the room id, an alias of the room, or a member of the room is in its namespaces."""
    if service.is_interested_in_user(sender) or service.is_interested_in_room_id(room_id):
        return True
    if (
        event_type == "m.room.member"
        and state_key is not None
        and service.is_interested_in_user(state_key)
    ):
        return True
    if any(service.is_interested_in_alias(a) for a in facts.aliases):
        return True
    return any(service.is_interested_in_user(m) for m in facts.members)


def is_interested_in_room(service: AppService, room_id: str, facts: RoomFacts) -> bool:
    """Whether the room's ephemeral data (typing, receipts) goes to the AS: the room id,
    an alias of the room, or a member of the room is in its namespaces."""
    return (
        service.is_interested_in_room_id(room_id)
        or any(service.is_interested_in_alias(a) for a in facts.aliases)
        or any(service.is_interested_in_user(m) for m in facts.members)
    )


@dataclass
class AppServiceRegistry:
    """Every application service of this server, by id and by as_token."""

    services: tuple[AppService, ...] = ()
    by_token: dict[str, AppService] = field(init=False)
    by_id: dict[str, AppService] = field(init=False)

    def __post_init__(self) -> None:
        self.by_token = {s.as_token: s for s in self.services}
        self.by_id = {s.id: s for s in self.services}

    def exclusive_user_owner(self, user_id: str) -> AppService | None:
        return next((s for s in self.services if s.owns_user_exclusively(user_id)), None)

    def exclusive_alias_owner(self, alias: str) -> AppService | None:
        return next((s for s in self.services if s.owns_alias_exclusively(alias)), None)

    def check_user_id_free(self, user_id: str, service: AppService | None) -> None:
        """M_EXCLUSIVE when another AS (or any AS, for ordinary users) claims the id."""
        owner = self.exclusive_user_owner(user_id)
        if owner is not None and owner is not service:
            raise ServiceError(
                400, "M_EXCLUSIVE", f"{user_id} is reserved by an application service"
            )

    def check_alias_allowed(self, alias: str, service: AppService | None) -> None:
        """Aliases in an exclusive alias namespace are the owning AS's alone."""
        owner = self.exclusive_alias_owner(alias)
        if owner is not None and owner is not service:
            raise ServiceError(400, "M_EXCLUSIVE", f"{alias} is reserved by an application service")

    def services_for_alias_query(self, alias: str) -> list[AppService]:
        return [s for s in self.services if s.url and s.is_interested_in_alias(alias)]

    def services_for_user_query(self, user_id: str) -> list[AppService]:
        """The services to ask about a missing local user: those whose user namespace
        holds it (their sender is created on demand, so it is never asked about)."""
        server = user_id.split(":", 1)[-1]
        return [
            s
            for s in self.services
            if s.url
            and user_id != s.sender
            and s.sender.split(":", 1)[1] == server
            and any(ns.matches(user_id) for ns in s.users)
        ]


def check_identity(service: AppService, user_id: str) -> None:
    """An AS may act only as users in its namespace (or its sender)."""
    if not service.is_interested_in_user(user_id):
        raise ServiceError(
            403, "M_FORBIDDEN", f"Application service cannot masquerade as {user_id}"
        )


# ---- reading registration files


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"app_service_config_files: {path}: {message}")


def _string(data: Mapping[str, Any], key: str, path: str, *, nullable: bool = False) -> Any:
    if key not in data:
        raise _fail(path, f"missing {key}")
    value = data[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(path, f"{key} must be a non-empty string")
    return value


def _namespaces(data: Any, kind: str, path: str) -> tuple[Namespace, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise _fail(path, f"namespaces.{kind} must be a list")
    out = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("regex"), str):
            raise _fail(path, f"each of namespaces.{kind} needs a regex string")
        exclusive = entry.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise _fail(path, f"namespaces.{kind}: exclusive must be true or false")
        try:
            regex = re.compile(entry["regex"])
        except re.error as exc:
            raise _fail(path, f"namespaces.{kind}: bad regex {entry['regex']!r}: {exc}") from None
        out.append(Namespace(regex, exclusive))
    return tuple(out)


def parse_registration(data: Any, path: str, server_name: str) -> AppService:
    """One registration file's content as an AppService, or ConfigError naming the problem."""
    if not isinstance(data, dict):
        raise _fail(path, "the top level must be a mapping")
    url = _string(data, "url", path, nullable=True)
    if url is not None and not url.startswith(("http://", "https://")):
        raise _fail(path, "url must be an http:// or https:// URL, or null")
    localpart = _string(data, "sender_localpart", path)
    if not is_valid_localpart(localpart):
        raise _fail(path, f"sender_localpart {localpart!r} is not a valid user localpart")
    namespaces = data.get("namespaces", {})
    if namespaces is None:
        namespaces = {}
    if not isinstance(namespaces, dict):
        raise _fail(path, "namespaces must be a mapping")
    unknown = set(namespaces) - set(NAMESPACE_KINDS)
    if unknown:
        raise _fail(path, f"unknown namespace kind {sorted(unknown)[0]!r}")
    rate_limited = data.get("rate_limited", True)
    if not isinstance(rate_limited, bool):
        raise _fail(path, "rate_limited must be true or false")
    protocols = data.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise _fail(path, "protocols must be a list of strings")
    ephemeral = data.get("receive_ephemeral", data.get(EPHEMERAL_UNSTABLE, False))
    if not isinstance(ephemeral, bool):
        raise _fail(path, "receive_ephemeral must be true or false")
    as_token = _string(data, "as_token", path)
    hs_token = _string(data, "hs_token", path)
    if as_token == hs_token:
        raise _fail(path, "as_token and hs_token must differ")
    return AppService(
        id=_string(data, "id", path),
        url=url,
        as_token=as_token,
        hs_token=hs_token,
        sender=f"@{localpart}:{server_name}",
        users=_namespaces(namespaces.get("users"), "users", path),
        aliases=_namespaces(namespaces.get("aliases"), "aliases", path),
        rooms=_namespaces(namespaces.get("rooms"), "rooms", path),
        rate_limited=rate_limited,
        protocols=tuple(protocols),
        receive_ephemeral=ephemeral,
        ephemeral_unstable="receive_ephemeral" not in data and EPHEMERAL_UNSTABLE in data,
    )


def load_registry(paths: Iterable[str], server_name: str) -> AppServiceRegistry:
    """Read and check every registration file; ConfigError (one line) on the first problem."""
    services: list[AppService] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(path, f"cannot read it: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise _fail(path, "not valid YAML") from None
        service = parse_registration(data, path, server_name)
        for other in services:
            if other.id == service.id:
                raise _fail(path, f"id {service.id!r} is used by another application service")
            tokens = {other.as_token, other.hs_token}
            if service.as_token in tokens or service.hs_token in tokens:
                raise _fail(path, "as_token and hs_token must differ from other services' tokens")
            if other.sender == service.sender:
                raise _fail(path, f"sender_localpart is used by application service {other.id}")
        services.append(service)
    return AppServiceRegistry(tuple(services))
