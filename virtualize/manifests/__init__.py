"""The data model: chunk manifests, virtual arrays and groups."""

from virtualize.manifests import array_api as _array_api  # noqa: F401  (registers functions)
from virtualize.manifests.array import ManifestArray
from virtualize.manifests.group import ManifestGroup
from virtualize.manifests.manifest import (
    INLINE,
    MISSING,
    ChunkEntry,
    ChunkManifest,
    RefBatch,
    SourceInfo,
)

__all__ = [
    "INLINE",
    "MISSING",
    "ChunkEntry",
    "ChunkManifest",
    "ManifestArray",
    "ManifestGroup",
    "RefBatch",
    "SourceInfo",
]
