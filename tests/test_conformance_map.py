"""docs/conformance.md names the tests that hold each conformance line; they must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_conformance_map_exists() -> None:
    text = (ROOT / "docs" / "conformance.md").read_text()
    defined = {
        match.group(1)
        for path in (ROOT / "tests").glob("test_*.py")
        for match in re.finditer(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    named = set(re.findall(r"(test_\w+)(?:\[[^\]]*\])?`", text))
    named = {name for name in named if not name.endswith("_py")}
    assert len(named) > 60
    missing = sorted(named - defined)
    assert missing == [], f"tests named in docs/conformance.md that do not exist: {missing}"
