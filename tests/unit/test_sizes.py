"""Sizes (docs/ARCHITECTURE.md): no module over 600 lines and no function over 80, in
every Python file the repository tracks; past that, a module or a function splits by
sub-concern."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
FOLDERS = ("homeserver", "federation", "schema", "tests", "contrib")


def _tracked() -> list[Path]:
    """The repository's tracked .py files (untracked scratch files are not its code);
    outside a git checkout, every .py file of its folders."""
    if not (ROOT / ".git").exists():
        return sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return sorted(ROOT / name for name in listed.split("\0") if name and (ROOT / name).exists())


def oversize(rel: str, source: str) -> list[str]:
    """What in `rel` is over the limits: the module, or its functions (nested and
    methods too), measured from the `def` line to the last line of the body."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{rel}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                limit = f"(at most {MAX_FUNCTION_LINES})"
                found.append(f"{rel}:{node.lineno} {node.name}: {length} lines {limit}")
    return found


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines - 1))
    return f"{indent}def {name}() -> None:\n{body}"


def test_an_oversize_function_is_found() -> None:
    fits = _function("fits", MAX_FUNCTION_LINES)
    assert not oversize("fits.py", fits)
    method = "class C:\n" + _function("long_method", MAX_FUNCTION_LINES + 1, indent="    ")
    assert oversize("m.py", fits + method) == [
        f"m.py:{MAX_FUNCTION_LINES + 2} long_method: {MAX_FUNCTION_LINES + 1} lines"
        f" (at most {MAX_FUNCTION_LINES})"
    ]


def test_an_oversize_module_is_found() -> None:
    assert not oversize("ok.py", "x = 1\n" * MAX_MODULE_LINES)
    assert oversize("big.py", "x = 1\n" * (MAX_MODULE_LINES + 1)) == [
        f"big.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"
    ]


def test_the_walk_sees_the_repository() -> None:
    rels = {path.relative_to(ROOT).as_posix() for path in _tracked()}
    for folder in FOLDERS:
        assert any(rel.startswith(folder + "/") for rel in rels), folder
    assert "tests/unit/test_sizes.py" in rels


def test_no_module_or_function_is_oversize() -> None:
    found = [
        problem
        for path in _tracked()
        for problem in oversize(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)
