"""The check every parser test makes: a virtual read equals the native read, exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr
from obstore.store import LocalStore, S3Store

import virtualize as vz

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def local_registry(path: str | Path) -> vz.ObjectStoreRegistry:
    """A registry that authorises exactly the folder of ``path``."""
    folder = Path(path).resolve().parent
    return vz.ObjectStoreRegistry({folder.as_uri() + "/": LocalStore(folder)})


def without_nczarr_attributes(dataset: xr.Dataset) -> xr.Dataset:
    """Drop attributes xarray's zarr backend never shows.

    xarray treats every attribute whose name starts with ``_nc`` (any case) as NCZarr
    bookkeeping and hides it when reading zarr, so such attributes (``_NCPROPERTIES`` in some
    netCDF files) can't appear on the zarr side of any comparison.
    """
    dataset = dataset.copy()
    dataset.attrs = {k: v for k, v in dataset.attrs.items() if not k.lower().startswith("_nc")}
    for variable in dataset.variables.values():
        variable.attrs = {
            k: v for k, v in variable.attrs.items() if not k.lower().startswith("_nc")
        }
    return dataset


def read_through_manifest_store(store: vz.ManifestStore, **kwargs: Any) -> xr.Dataset:
    """Read a ManifestStore with plain xarray, everything loaded."""
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None, **kwargs).load()


def assert_virtual_equals_native(
    path: str | Path,
    *,
    engine: str | None = None,
    group: str | None = None,
    parser: Any = None,
    native_kwargs: dict[str, Any] | None = None,
    **open_kwargs: Any,
) -> xr.Dataset:
    """Parse ``path`` virtually, read it back through ManifestStore, and compare with
    ``xr.open_dataset`` (both with ``open_kwargs``; ``native_kwargs`` go to the native side
    only, e.g. h5netcdf's ``phony_dims``); returns the virtual read."""
    parser = parser or vz.parsers.HDFParser(group=group)
    store = parser(str(path), local_registry(path))
    virtual = read_through_manifest_store(store, **open_kwargs)
    native_options = {**open_kwargs, **(native_kwargs or {})}
    with xr.open_dataset(path, engine=engine, group=group, **native_options) as native:
        expected = without_nczarr_attributes(native.load())
    xr.testing.assert_identical(virtual, expected)
    return virtual


def moto_bucket_store(bucket: str, endpoint: str) -> S3Store:
    """An obstore store of ``bucket`` on the moto server of the ``s3_endpoint`` fixture."""
    return S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
