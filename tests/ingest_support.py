"""Helpers for the ingest tests that a subprocess imports too."""

from __future__ import annotations

import time
from typing import Any

from virtualize.parsers import HDFParser


class SlowParser:
    """HDFParser that takes ``delay`` seconds per file, so that a test can stop an ingest,
    or read the repository, while a batch is being parsed."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.parser = HDFParser()

    def __call__(self, url: str, registry: Any) -> Any:
        time.sleep(self.delay)
        return self.parser(url, registry)
