"""What every writer starts from: a virtual dataset split into references and values."""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.manifests import INLINE, MISSING, ChunkManifest, ManifestArray
from virtualize.manifests.array import replace_metadata
from virtualize.manifests.grid import chunk_grid_of, grid_shape
from virtualize.parsers.attributes import to_json_value

__all__ = [
    "STORAGE_ENCODING",
    "WritePlan",
    "encode_loaded",
    "inline_loaded_variables",
    "plan_write",
]

#: Encoding keys of loaded variables that describe how the *source* stored them (chunks,
#: codecs); the references store them afresh, so only CF encoding is kept.
STORAGE_ENCODING = frozenset(
    {
        "chunks",
        "preferred_chunks",
        "compressor",
        "compressors",
        "filters",
        "serializer",
        "shards",
        "fill_value",
        "write_empty_chunks",
        "object_codec",
        "zarr_format",
        "dimension_separator",
        "chunk_key_encoding",
    }
)


@dataclass
class WritePlan:
    """A dataset to write.

    Parameters
    ----------
    virtual
        Virtual variables by name, their metadata carrying the dimension names and attributes
        of the xarray variables (so renames and attribute edits are kept).
    loaded
        The variables that hold values, as a dataset xarray can encode (CF encoding, chunk
        encoding) the way ``to_zarr`` does.
    attributes
        The dataset's attributes, JSON-serialisable.
    """

    virtual: dict[str, ManifestArray]
    loaded: xr.Dataset
    attributes: dict[str, Any] = field(default_factory=dict)


def plan_write(dataset: xr.Dataset) -> WritePlan:
    """Split ``dataset`` into its virtual variables and its loaded ones.

    Non-index coordinates are recorded in each data variable's ``coordinates`` attribute, as
    xarray's own zarr writer does, so a reader gets the same coordinates back.
    """
    non_index_coords = [str(name) for name in dataset.coords if name not in dataset.dims]
    virtual: dict[str, ManifestArray] = {}
    loaded_names: list[Hashable] = []
    for name, variable in dataset.variables.items():
        array = variable.data
        if not isinstance(array, ManifestArray):
            loaded_names.append(name)
            continue
        attributes = {str(k): to_json_value(v) for k, v in variable.attrs.items()}
        if name in dataset.data_vars and "coordinates" not in attributes:
            related = [c for c in non_index_coords if set(dataset[c].dims) <= set(variable.dims)]
            if related:
                attributes["coordinates"] = " ".join(related)
        metadata = replace_metadata(
            array.metadata,
            dimension_names=tuple(str(d) for d in variable.dims),
            attributes=attributes,
        )
        virtual[str(name)] = ManifestArray(metadata, array.manifest)
    loaded = dataset[loaded_names] if loaded_names else xr.Dataset()
    loaded = loaded.drop_vars([n for n in loaded.variables if n in virtual], errors="ignore")
    loaded.attrs = {}
    attributes = {str(k): to_json_value(v) for k, v in dataset.attrs.items()}
    return WritePlan(virtual=virtual, loaded=loaded, attributes=attributes)


def encode_loaded(loaded: xr.Dataset, zarr_format: int) -> dict[str, bytes]:
    """The store contents xarray's ``to_zarr`` writes for ``loaded``, in memory: CF encoding
    and codecs as ``to_zarr`` chooses them; encodings of the source's storage are dropped."""
    from zarr.storage import MemoryStore

    clean = loaded.copy()
    for variable in clean.variables.values():
        variable.encoding = {
            k: v for k, v in variable.encoding.items() if k not in STORAGE_ENCODING
        }
    contents: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on v3 string types, for example
        clean.to_zarr(
            MemoryStore(store_dict=contents),
            zarr_format=zarr_format,
            consolidated=False,
            mode="w",
        )
    return {key: value.to_bytes() for key, value in contents.items()}


def inline_loaded_variables(loaded: xr.Dataset) -> tuple[dict[str, ManifestArray], dict[str, Any]]:
    """Encode loaded variables as xarray's ``to_zarr`` does (CF encoding, codecs), in memory,
    and return them as virtual arrays whose chunks are held inline, plus the group attributes
    xarray wrote (``coordinates`` that no variable names)."""
    if not loaded.variables:
        return {}, {}
    blobs = encode_loaded(loaded, 3)
    root = json.loads(blobs.pop("zarr.json", b"{}"))
    arrays: dict[str, ManifestArray] = {}
    for key in sorted(blobs):
        if not key.endswith("/zarr.json"):
            continue
        name = key[: -len("/zarr.json")]
        metadata = ArrayV3Metadata.from_dict(json.loads(blobs[key]))
        grid = grid_shape(metadata.shape, chunk_grid_of(metadata))
        path_ids = np.full(grid, MISSING, dtype=np.uint32)
        inline: dict[int, bytes] = {}
        for chunk_key, data in blobs.items():
            if not chunk_key.startswith(f"{name}/") or chunk_key == key:
                continue
            index = metadata.chunk_key_encoding.decode_chunk_key(chunk_key[len(name) + 1 :])
            path_ids[index] = INLINE
            inline[int(np.ravel_multi_index(index, grid)) if grid else 0] = data
        zeros = np.zeros(grid, dtype=np.uint64)
        manifest = ChunkManifest([], path_ids, zeros, zeros.copy(), inline=inline, validate=False)
        arrays[name] = ManifestArray(metadata, manifest)
    return arrays, dict(root.get("attributes", {}))
