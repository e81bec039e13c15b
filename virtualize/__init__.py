"""virtualize: virtual Zarr datacubes over archives of scientific files.

Parsers read only a file's metadata and record, for every chunk of every array, where its
bytes already are. Those references combine with xarray into one datacube that zarr reads
directly (:class:`ManifestStore`) or that is committed to Icechunk or written as Kerchunk.
"""

from importlib.metadata import PackageNotFoundError, version

# _eccodes first: it loads PROJ before anything can load ecCodes (see that module)
from virtualize import _eccodes, errors, parsers  # noqa: F401  (_eccodes: for its effect)
from virtualize.ingest import IngestReport, ingest
from virtualize.manifests import ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.network import NetworkSettings
from virtualize.registry import ObjectStoreRegistry
from virtualize.store import ManifestStore
from virtualize.xarray import (
    VirtualizeAccessor,
    open_virtual_dataset,
    open_virtual_datatree,
    open_virtual_mfdataset,
)

try:
    __version__ = version("virtualize")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ChunkManifest",
    "IngestReport",
    "ManifestArray",
    "ManifestGroup",
    "ManifestStore",
    "NetworkSettings",
    "ObjectStoreRegistry",
    "SourceInfo",
    "VirtualizeAccessor",
    "__version__",
    "errors",
    "ingest",
    "open_virtual_dataset",
    "open_virtual_datatree",
    "open_virtual_mfdataset",
    "parsers",
]
