"""s3:// urls against an S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import obstore
import pytest
import xarray as xr
from oracle import moto_bucket_store, read_through_manifest_store

import virtualize as vz
from virtualize.errors import UnauthorizedLocationError

BUCKET = "archive"


def upload_sample(endpoint: str, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "sample.nc"
    xr.Dataset(
        {"v": (("t", "x"), np.arange(60, dtype="f8").reshape(6, 10))},
        coords={"t": np.arange(6)},
        attrs={"where": "s3"},
    ).to_netcdf(path, engine="netcdf4", encoding={"v": {"zlib": True, "chunksizes": (2, 5)}})
    obstore.put(moto_bucket_store(BUCKET, endpoint), "era/sample.nc", path.read_bytes())
    return f"s3://{BUCKET}/era/sample.nc", path


def test_open_and_read_an_s3_file(s3_endpoint: str, tmp_path: Path) -> None:
    url, local = upload_sample(s3_endpoint, tmp_path)
    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": moto_bucket_store(BUCKET, s3_endpoint)})
    vds = vz.open_virtual_dataset(url, registry=registry)
    assert vds["v"].data.manifest.urls == (url,)
    source = vds["v"].data.manifest.sources[0]
    assert source is not None and source.etag and source.size == local.stat().st_size
    store = vz.parsers.HDFParser()(url, registry)
    xr.testing.assert_identical(read_through_manifest_store(store), xr.open_dataset(local).load())


def test_registry_none_uses_the_bucket_and_environment_credentials(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, local = upload_sample(s3_endpoint, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false")
    with pytest.warns(UserWarning, match=f"s3://{BUCKET}/"):
        vds = vz.open_virtual_dataset(url, loadable_variables=["t", "v"])
    xr.testing.assert_identical(vds["v"], xr.open_dataset(local)["v"].load())


def test_a_prefix_of_the_bucket_does_not_authorise_the_rest(
    s3_endpoint: str, tmp_path: Path
) -> None:
    url, _ = upload_sample(s3_endpoint, tmp_path)
    registry = vz.ObjectStoreRegistry(
        {f"s3://{BUCKET}/other/": moto_bucket_store(BUCKET, s3_endpoint)}
    )
    with pytest.raises(UnauthorizedLocationError, match=r"sample\.nc"):
        vz.open_virtual_dataset(url, registry=registry)
