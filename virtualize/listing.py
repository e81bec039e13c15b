"""Turning ``urls_or_glob`` into urls: local paths and object-store globs, listed with obstore.

A glob's folder part (everything before the first segment holding ``*``, ``?`` or ``[``) is
listed through the registry, so a glob can only ever reach registered locations; the rest is
matched segment by segment (``*`` stays inside one folder, ``**`` crosses folders).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import obstore

from virtualize.errors import NoFilesError
from virtualize.registry import ObjectStoreRegistry, normalize_url

__all__ = [
    "expand_glob",
    "flatten_nested",
    "glob_regex",
    "has_glob",
    "split_glob",
    "unflatten_nested",
]

_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def has_glob(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds glob characters (``*``, ``?``, ``[``)."""
    return bool(_GLOB_CHARACTERS.search(os.fspath(path)))


def split_glob(pattern: str) -> tuple[str, str]:
    """Split a glob into the url of the folder to list and the pattern below it."""
    first = _GLOB_CHARACTERS.search(pattern)
    if first is None:
        raise ValueError(f"{pattern!r} is not a glob")
    cut = pattern.rfind("/", 0, first.start()) + 1
    base, rest = pattern[:cut], pattern[cut:]
    if not base:
        base = "./"
    folder = normalize_url(base)
    return (folder if folder.endswith("/") else folder + "/"), rest


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over ``/``-separated keys: ``*`` and ``?`` stay inside one segment,
    ``**`` spans any number of folders, ``[...]`` is a character class."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out) + r"\Z")


def expand_glob(pattern: str, registry: ObjectStoreRegistry) -> list[str]:
    """The sorted urls of the objects matching ``pattern`` (a local path or url glob).

    Parameters
    ----------
    pattern
        A glob such as ``"data/*.nc"``, ``"s3://bucket/era5/**/2023-*.nc"``.
    registry
        Lists the folder part of the glob; it must be registered.

    Raises
    ------
    NoFilesError
        Nothing matches.
    UnauthorizedLocationError
        The folder part of the glob is not registered.
    """
    folder, rest = split_glob(pattern)
    store, prefix = registry.resolve(folder)
    matcher = glob_regex(rest)
    found: list[str] = []
    local = folder.startswith("file://")
    for batch in obstore.list(store, prefix=prefix.rstrip("/") or None, chunk_size=1000):
        for entry in batch:
            key = str(entry["path"])
            relative = key[len(prefix) :] if key.startswith(prefix) else key
            if matcher.match(relative):
                found.append(folder + (quote(relative, safe="/") if local else relative))
    if not found:
        raise NoFilesError(
            f"no files match {rest!r} under this folder",
            url=folder,
            hint="Check the pattern: '*' stays inside one folder, '**/' crosses folders",
        )
    return sorted(found)


def flatten_nested(paths: Any) -> tuple[list[Any], Any]:
    """Flatten nested lists of paths (for ``combine="nested"``) and return the flat list and
    the nesting, as lists of positions, for :func:`unflatten_nested`."""
    flat: list[Any] = []

    def walk(node: Any) -> Any:
        if isinstance(node, Sequence) and not isinstance(node, str | bytes):
            return [walk(child) for child in node]
        flat.append(node)
        return len(flat) - 1

    return flat, walk(paths)


def unflatten_nested(structure: Any, values: Sequence[Any]) -> Any:
    """Rebuild the nesting recorded by :func:`flatten_nested` with ``values``."""
    if isinstance(structure, list):
        return [unflatten_nested(child, values) for child in structure]
    return values[structure]
