"""What every writer starts from: a virtual dataset split into references and values."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from virtualize.manifests import ManifestArray
from virtualize.manifests.array import replace_metadata
from virtualize.parsers.attributes import to_json_value

__all__ = ["WritePlan", "plan_write"]


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
