"""A griffe extension for the API reference: Sphinx roles in docstrings become links.

virtualize's docstrings follow the numpydoc convention and cross-reference with Sphinx roles
(``:class:`~virtualize.ManifestStore```). mkdocstrings renders Markdown, so each role is
rewritten into an *optional* autorefs cross-reference: it links to the object when the API
reference renders it, and otherwise shows as plain code, never as a broken link (which would
fail ``mkdocs build --strict``). Doctest directives are dropped from the examples shown.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|exc|data|mod|obj|const|term):`(?P<tilde>~?)(?P<target>[^`<>]+)`"
)
_DOCTEST_DIRECTIVE = re.compile(r"\s*# doctest: [^\n]*")


def _resolve(target: str, scope: griffe.Object | None) -> str:
    """The full path of ``target`` as seen from ``scope`` (its imports and parents)."""
    if scope is None or "." in target:
        return target
    try:
        return scope.resolve(target)
    except Exception:  # an unknown name stays as written and renders as plain code
        return target


def convert(text: str, scope: griffe.Object | None = None) -> str:
    """Rewrite Sphinx roles as optional autorefs and drop doctest directives."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        identifier = _resolve(target, scope)
        return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

    return _DOCTEST_DIRECTIVE.sub("", _ROLE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Rewrite the docstring of every object griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, obj)
