"""The naming rule of the composition root (the comment at the top of `Homeserver`):
a field is named for the module that defines its class, qualified by the package
(`<package>_<module>`) where the module's name alone is ambiguous, and always where
two packages have a module of that name."""

from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from pathlib import Path

from homeserver.services.homeserver import Homeserver

ROOT = Path(__file__).resolve().parents[2]
# Not services: the inputs, and state several services share.
NOT_SERVICES = frozenset(
    {"config", "db", "signing_key", "event_cache", "token_cache", "devices_seen"}
)


def shared_module_names(root: Path) -> frozenset[str]:
    """Module names that more than one package of services/ has (storage/ repeats
    services' names on purpose, so it does not count)."""
    counts: Counter[str] = Counter()
    for package in (root / "homeserver" / "services").iterdir():
        if package.is_dir():
            counts.update(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    return frozenset(name for name, n in counts.items() if n > 1)


def misnamed(field: str, module: str, shared: frozenset[str]) -> str | None:
    """Why `field` breaks the rule for a class defined in `module`, or None."""
    parts = module.split(".")
    if parts[:1] != ["homeserver"] or len(parts) != 4:
        return f"{field}: {module} is not a module of a package of homeserver/"
    package, name = parts[2], parts[3]
    qualified = f"{package}_{name}"
    if name in shared and field != qualified:
        return f"{field}: two packages have a {name} module, so it is {qualified}"
    if field not in (name, qualified):
        return f"{field}: its class is defined in {module}, so it is {name} or {qualified}"
    return None


def test_fields_are_named_for_their_modules() -> None:
    hints = typing.get_type_hints(Homeserver)
    shared = shared_module_names(ROOT)
    problems = [
        problem
        for f in dataclasses.fields(Homeserver)
        if f.name not in NOT_SERVICES
        and (problem := misnamed(f.name, hints[f.name].__module__, shared)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_a_misnamed_field_is_found() -> None:
    shared = frozenset({"keys"})
    assert misnamed("reads", "homeserver.services.remote.reads", shared) is None
    assert misnamed("remote_reads", "homeserver.services.remote.reads", shared) is None
    assert misnamed("federation_reads", "homeserver.services.remote.reads", shared)
    assert misnamed("keys", "homeserver.services.remote.keys", shared)
    assert misnamed("remote_keys", "homeserver.services.remote.keys", shared) is None
