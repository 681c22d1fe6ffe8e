"""The layout keeps its shape: small source files, and packages that say what they own.

Import circles and layer breaches are import-linter's to find (.importlinter: its acyclic_siblings
contract counts imports inside functions too); what it cannot see is checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("controller", "actors")
MAX_LINES = 450


def source_files() -> list[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*.py"))


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_source_file_is_over_the_limit():
    long = {
        str(p.relative_to(ROOT)): line_count(p) for p in source_files() if line_count(p) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines, split by job: {long}"


def test_every_package_says_what_it_owns_and_may_import():
    for init in sorted(p for top in SOURCES for p in (ROOT / top).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        name = init.parent.relative_to(ROOT)
        assert doc, f"{name}/__init__.py has no docstring saying what the package owns"
        if init.parent.parent != ROOT:  # the two roots say it as layers
            assert "May import" in doc, f"{name}/__init__.py does not say what it may import"
