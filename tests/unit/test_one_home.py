"""One clock, one invalid-parameter error, one JSON object type (docs/ARCHITECTURE.md):
each has a single home, and a copy elsewhere fails here.

- `now_ms`: homeserver/services/core/clock.py.
- `invalid_param`: homeserver/services/core/errors.py for services (ServiceError), and
  homeserver/api/errors.py beside the API's other MatrixError helpers.
- `JsonDict`: federation/types.py, the bottom of the import graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("homeserver", "federation", "schema", "tests", "contrib")

CLOCK_HOME = "homeserver/services/core/clock.py"
ERROR_HOMES = frozenset({"homeserver/services/core/errors.py", "homeserver/api/errors.py"})
JSON_HOME = "federation/types.py"


def _only_return(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    body = [
        s for s in func.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
        return ast.unparse(body[0].value)
    return None


def copies(rel: str, source: str) -> list[str]:
    """What `rel` defines that has its home elsewhere."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            returned = _only_return(node) or ""
            clock = node.name in ("now_ms", "_now_ms") or "time.time() * 1000" in returned
            if clock and rel != CLOCK_HOME:
                found.append(f"{rel}: {node.name}() copies the clock of {CLOCK_HOME}")
            if "(400, 'M_INVALID_PARAM'" in returned and rel not in ERROR_HOMES:
                found.append(f"{rel}: {node.name}() copies invalid_param of {sorted(ERROR_HOMES)}")
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            if ast.unparse(node.value) == "dict[str, Any]" and rel != JSON_HOME:
                found.append(f"{rel}: a JSON object alias; use JsonDict of {JSON_HOME}")
    return found


def test_copies_are_found() -> None:
    source = '''
import time
JsonDict = dict[str, Any]
def _now() -> int:
    """Milliseconds."""
    return int(time.time() * 1000)
class Thing:
    def _invalid(self, message: str) -> ServiceError:
        return ServiceError(400, "M_INVALID_PARAM", message)
'''
    found = copies("homeserver/services/rooms/bad.py", source)
    assert len(found) == 3, found
    assert not copies(
        CLOCK_HOME, "import time\ndef now_ms() -> int:\n    return int(time.time() * 1000)\n"
    )


def _tracked() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _tracked(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_one_home(path: Path) -> None:
    found = copies(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    assert not found, found
