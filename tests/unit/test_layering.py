"""The layering rules of docs/ARCHITECTURE.md, checked on the source with `ast`.

Arrows point down: `homeserver/api/` -> `homeserver/services/` -> `homeserver/storage/`,
and everything may use `federation/`, which uses nothing of `homeserver/`.

- `federation/` imports nothing from `homeserver/`, in any form, and does no I/O: only
  the X-Matrix helpers (`federation/xmatrix.py`, where the outbound request helpers
  live) may import network, file or process modules or call `open()`.
- `homeserver/api/` imports nothing of `homeserver/storage/` (not even for types): the
  handlers reach data through services.
- `homeserver/services/` imports nothing of `homeserver/api/`.
- `homeserver/storage/` imports nothing from `api/` or `services/`.
- Only `homeserver/storage/` imports the database driver (psycopg, psycopg_pool): the
  layers above use the names `homeserver/storage/core/pool.py` gives them.
- SQL statements are written only in `homeserver/storage/` and `schema/`.

Every rule is shown to fail on a deliberately wrong module before it is trusted to pass
on the tree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Top-level modules that reach the network, the file system or other processes.
IO_MODULES = frozenset(
    {
        "aiohttp",
        "asyncio",
        "ftplib",
        "http",
        "httpx",
        "io",
        "multiprocessing",
        "os",
        "pathlib",
        "psycopg",
        "psycopg_pool",
        "requests",
        "select",
        "selectors",
        "shutil",
        "smtplib",
        "socket",
        "sqlite3",
        "ssl",
        "subprocess",
        "tempfile",
        "urllib",
    }
)
IO_BUILTINS = frozenset({"open", "input", "print", "__import__"})
# Today no federation module does any I/O; xmatrix.py is where the X-Matrix client helpers
# (signing and sending requests) are allowed to.
FEDERATION_IO_ALLOWED = frozenset({"federation/xmatrix.py"})

SQL = re.compile(
    r"\bSELECT\s|\bINSERT\s+INTO\b|\bUPDATE\s[^;]*?\bSET\b|\bDELETE\s+FROM\b", re.DOTALL
)
SQL_HOMES = ("homeserver/storage/", "schema/")


def _modules(*folders: str, root: Path = ROOT) -> list[Path]:
    return sorted(path for folder in folders for path in (root / folder).rglob("*.py"))


def _rel(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _package_of(rel: str) -> list[str]:
    """The package a module at `rel` (e.g. homeserver/api/http.py) belongs to, for
    resolving its relative imports."""
    return rel.removesuffix(".py").split("/")[:-1]


def _imported(tree: ast.Module, rel: str = "") -> Iterator[str]:
    """Every module name imported anywhere in the module (including inside functions
    and `if TYPE_CHECKING:`), relative imports resolved against `rel`, plus names given
    to `importlib.import_module` and `__import__` as string literals."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, rel)
            if module:
                yield module
                for alias in node.names:
                    yield f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and _called_name(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    yield node.args[0].value


def _absolute(node: ast.ImportFrom, rel: str) -> str | None:
    if node.level == 0:
        return node.module
    package = _package_of(rel)
    if not rel or node.level - 1 > len(package):
        return None
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])]) or None


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _top(module: str) -> str:
    return module.partition(".")[0]


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class ImportRule:
    """Modules under `folders` (but not under `exempt`) import nothing under `forbidden`."""

    folders: tuple[str, ...]
    forbidden: tuple[str, ...]
    why: str
    exempt: tuple[str, ...] = ()

    def applies_to(self, rel: str) -> bool:
        return rel.startswith(tuple(f + "/" for f in self.folders)) and not rel.startswith(
            self.exempt
        )

    def violations(self, rel: str, source: str) -> list[str]:
        if not self.applies_to(rel):
            return []
        imported = _imported(ast.parse(source), rel)
        bad = {m for m in imported if any(_is_under(m, f) for f in self.forbidden)}
        return [f"{rel} imports {m}: {self.why}" for m in sorted(bad)]

    def scan(self, root: Path) -> list[str]:
        return [
            found
            for path in _modules(*self.folders, root=root)
            for found in self.violations(_rel(path, root), path.read_text(encoding="utf-8"))
        ]


RULES = {
    "federation-imports-no-homeserver": ImportRule(
        ("federation",), ("homeserver",), "federation/ is the pure protocol library"
    ),
    "api-imports-no-storage": ImportRule(
        ("homeserver/api",), ("homeserver.storage",), "handlers reach data through services"
    ),
    "services-import-no-api": ImportRule(
        ("homeserver/services",), ("homeserver.api",), "services sit below the HTTP layer"
    ),
    "storage-imports-no-upper-layers": ImportRule(
        ("homeserver/storage",),
        ("homeserver.api", "homeserver.services"),
        "storage is the bottom layer of homeserver/",
    ),
    "only-storage-imports-the-driver": ImportRule(
        ("homeserver", "federation"),
        ("psycopg", "psycopg_pool"),
        "use the names of homeserver/storage/core/pool.py; SQL belongs in homeserver/storage/",
        exempt=("homeserver/storage/",),
    ),
}

# For each rule: where a deliberately wrong module would live, and what it imports.
WRONG_IMPORTS = {
    "federation-imports-no-homeserver": ("federation/bad.py", "from homeserver import config"),
    "api-imports-no-storage": (
        "homeserver/api/client/bad.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from homeserver.storage.rooms.events import EventRow\n",
    ),
    "services-import-no-api": (
        "homeserver/services/rooms/bad.py",
        "def f():\n    from ...api import errors\n",
    ),
    "storage-imports-no-upper-layers": (
        "homeserver/storage/rooms/bad.py",
        "import homeserver.services.core.errors as errors",
    ),
    "only-storage-imports-the-driver": (
        "homeserver/services/core/bad.py",
        "from psycopg import AsyncConnection",
    ),
}


def test_every_import_form_is_seen() -> None:
    source = """
import homeserver
import homeserver.storage.core.pool as pool
from homeserver.api import routes
from homeserver import config
import importlib
importlib.import_module("homeserver.services")
__import__("socket")
def f():
    from os import path
if TYPE_CHECKING:
    import aiohttp.web
from ..storage import streams
from . import sibling
"""
    seen = set(_imported(ast.parse(source), "homeserver/services/core/mod.py"))
    for name in (
        "homeserver",
        "homeserver.storage.core.pool",
        "homeserver.api",
        "homeserver.config",
        "homeserver.services",
        "socket",
        "os",
        "aiohttp.web",
        "homeserver.services.storage.streams",
        "homeserver.services.core.sibling",
    ):
        assert name in seen, name


def test_relative_imports_resolve_from_packages_too() -> None:
    tree = ast.parse("from ..storage import pool")
    assert "homeserver.storage.pool" in set(_imported(tree, "homeserver/api/__init__.py"))


def test_the_scans_see_the_code() -> None:
    assert len(_modules("federation")) >= 15
    assert ROOT / "federation/xmatrix.py" in _modules("federation")
    for rule in RULES.values():
        assert any(rule.applies_to(_rel(p)) for p in _modules(*rule.folders)), rule


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_import_rule_catches_a_wrong_import(name: str, tmp_path: Path) -> None:
    rule = RULES[name]
    rel, source = WRONG_IMPORTS[name]
    assert rule.violations(rel, source), f"{name} misses {source!r} in {rel}"
    # The same rule, scanning a tree holding the wrong module and an innocent one.
    for path, text in ((rel, source), (rel.replace("bad.py", "good.py"), "import json\n")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    found = rule.scan(tmp_path)
    assert found and all(line.startswith(rel + " ") for line in found), found


def test_the_driver_rule_spares_storage() -> None:
    rule = RULES["only-storage-imports-the-driver"]
    assert not rule.violations("homeserver/storage/core/pool.py", "import psycopg")
    assert rule.violations("homeserver/cli.py", "import psycopg")


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_tree_keeps_the_import_rule(name: str) -> None:
    found = RULES[name].scan(ROOT)
    assert not found, "\n".join(found)


def _io_violations(rel: str, tree: ast.Module) -> list[str]:
    if rel in FEDERATION_IO_ALLOWED:
        return []
    io_imports = sorted({m for m in _imported(tree, rel) if _top(m) in IO_MODULES})
    io_calls = sorted(
        {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in IO_BUILTINS
        }
    )
    return [f"{rel} imports {m}" for m in io_imports] + [f"{rel} calls {c}" for c in io_calls]


def test_the_io_check_catches_io() -> None:
    tree = ast.parse("import socket\ndef f():\n    return open('x')\n")
    assert _io_violations("federation/bad.py", tree) == [
        "federation/bad.py imports socket",
        "federation/bad.py calls open",
    ]
    assert not _io_violations("federation/xmatrix.py", tree)


@pytest.mark.parametrize("path", _modules("federation"), ids=_rel)
def test_federation_does_no_io(path: Path) -> None:
    found = _io_violations(_rel(path), _parse(path))
    assert not found, found


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes: prose about SQL is not SQL."""
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _sql_strings(tree: ast.Module) -> list[str]:
    docstrings = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and SQL.search(node.value)
    ]


OUTSIDE_SQL_HOMES = [
    path
    for path in _modules("homeserver", "federation", "schema")
    if not _rel(path).startswith(SQL_HOMES)
]


def test_the_sql_pattern() -> None:
    for sql in (
        "SELECT 1",
        "INSERT INTO events (event_id) VALUES (%s)",
        "UPDATE devices SET display_name = %s",
        "UPDATE public.devices AS d\n   SET display_name = %s",
        "DELETE FROM access_tokens WHERE token = %s",
    ):
        assert SQL.search(sql), sql
    assert not SQL.search("select the auth events; update the state; delete the device")


def test_the_sql_check_catches_sql_but_not_prose() -> None:
    source = '''"""We SELECT nothing here."""
async def f(conn):
    """DELETE FROM is storage's business."""
    await conn.execute("DELETE FROM devices WHERE user_id = %s", ("@a:b",))
'''
    assert _sql_strings(ast.parse(source)) == ["DELETE FROM devices WHERE user_id = %s"]


@pytest.mark.parametrize("path", OUTSIDE_SQL_HOMES, ids=_rel)
def test_sql_only_in_storage_and_schema(path: Path) -> None:
    found = _sql_strings(_parse(path))
    assert not found, f"{_rel(path)} has SQL {found[:3]}: it belongs in homeserver/storage/"


def test_storage_has_sql() -> None:
    assert any(_sql_strings(_parse(path)) for path in _modules("homeserver/storage"))
