"""The documentation site builds with ``mkdocs build --strict``: no warnings, no broken links.

The API reference is generated from the docstrings, so a docstring that mkdocstrings cannot
render, or a page link that points nowhere, fails this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    environment = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        "mkdocs build --strict failed (the API reference needs mkdocstrings-python, from the "
        f"dev extra):\n{result.stdout}\n{result.stderr}"
    )
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()
