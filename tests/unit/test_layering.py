"""The layering rules of DESIGN.md, checked on the source with `ast`.

- `federation/` imports nothing from `homeserver/`, in any form, and does no I/O: only
  the X-Matrix helpers (`federation/xmatrix.py`, where the outbound request helpers
  live) may import network, file or process modules or call `open()`.
- `homeserver/api/` never imports psycopg; `homeserver/storage/` imports nothing from
  `api/` or `services/`.
- SQL statements are written only in `homeserver/storage/` and `schema/`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
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


def _modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(tree: ast.Module) -> Iterator[str]:
    """Every absolute module name imported anywhere in the module (including inside
    functions and `if TYPE_CHECKING:`), plus names given to `importlib.import_module`
    and `__import__` as string literals."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module
                for alias in node.names:
                    yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and _called_name(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    yield node.args[0].value


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


FEDERATION = _modules("federation")


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
"""
    seen = set(_imported(ast.parse(source)))
    for name in (
        "homeserver",
        "homeserver.storage.core.pool",
        "homeserver.api",
        "homeserver.config",
        "homeserver.services",
        "socket",
        "os",
        "aiohttp.web",
    ):
        assert name in seen, name


def test_the_scans_see_the_code() -> None:
    assert len(FEDERATION) >= 15
    assert ROOT / "federation/xmatrix.py" in FEDERATION
    assert _modules("homeserver/api") and _modules("homeserver/storage")


@pytest.mark.parametrize("path", FEDERATION, ids=_rel)
def test_federation_does_not_import_homeserver(path: Path) -> None:
    bad = sorted({m for m in _imported(_parse(path)) if _top(m) == "homeserver"})
    assert not bad, f"{_rel(path)} imports {bad}"


@pytest.mark.parametrize("path", FEDERATION, ids=_rel)
def test_federation_does_no_io(path: Path) -> None:
    if _rel(path) in FEDERATION_IO_ALLOWED:
        return
    tree = _parse(path)
    io_imports = sorted({m for m in _imported(tree) if _top(m) in IO_MODULES})
    assert not io_imports, f"{_rel(path)} imports {io_imports}"
    io_calls = sorted(
        {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in IO_BUILTINS
        }
    )
    assert not io_calls, f"{_rel(path)} calls {io_calls}"


@pytest.mark.parametrize("path", _modules("homeserver/api"), ids=_rel)
def test_api_does_not_import_psycopg(path: Path) -> None:
    bad = sorted({m for m in _imported(_parse(path)) if _top(m) in ("psycopg", "psycopg_pool")})
    assert not bad, f"{_rel(path)} imports {bad}: SQL belongs in homeserver/storage/"


@pytest.mark.parametrize("path", _modules("homeserver/storage"), ids=_rel)
def test_storage_does_not_import_upper_layers(path: Path) -> None:
    bad = sorted(
        {
            m
            for m in _imported(_parse(path))
            if _is_under(m, "homeserver.api") or _is_under(m, "homeserver.services")
        }
    )
    assert not bad, f"{_rel(path)} imports {bad}"


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


def _sql_strings(path: Path) -> list[str]:
    tree = _parse(path)
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


@pytest.mark.parametrize("path", OUTSIDE_SQL_HOMES, ids=_rel)
def test_sql_only_in_storage_and_schema(path: Path) -> None:
    found = _sql_strings(path)
    assert not found, f"{_rel(path)} has SQL {found[:3]}: it belongs in homeserver/storage/"


def test_storage_has_sql() -> None:
    assert any(_sql_strings(path) for path in _modules("homeserver/storage"))
