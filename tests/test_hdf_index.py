"""The direct chunk-index reader lists exactly the chunks h5py lists, or declines."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from obstore.store import LocalStore
from oracle import CORPUS

from virtualize.parsers.hdf_index import (
    ChunkIndex,
    IndexFormatError,
    read_v1_btree_chunk_index,
)


def h5py_chunks(dataset: h5py.Dataset) -> list[tuple[tuple[int, ...], int, int, int]]:
    records: list = []
    if dataset.id.get_storage_size() > 0:
        dataset.id.chunk_iter(records.append)
    return sorted((tuple(r.chunk_offset), r.byte_offset, r.size, r.filter_mask) for r in records)


def direct_chunks(path: Path, dataset: h5py.Dataset) -> ChunkIndex | None:
    plist = dataset.file.id.get_create_plist()
    return read_v1_btree_chunk_index(
        LocalStore(path.parent),
        path.name,
        header_address=int(h5py.h5o.get_info(dataset.id).addr),
        base_address=int(plist.get_userblock()),
        file_size=path.stat().st_size,
        ndim=dataset.ndim,
    )


def as_records(index: ChunkIndex) -> list[tuple[tuple[int, ...], int, int, int]]:
    return sorted(
        (tuple(int(c) for c in coords), int(a), int(s), int(m))
        for coords, a, s, m in zip(
            index.coordinates, index.addresses, index.sizes, index.filter_masks, strict=True
        )
    )


def chunked_datasets(path: Path) -> list[str]:
    names: list[str] = []

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset) and node.chunks is not None and node.shape:
            names.append(name)

    with h5py.File(path) as f:
        f.visititems(visit)
    return names


def test_many_shapes_and_tree_depths(tmp_path: Path) -> None:
    path = tmp_path / "shapes.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_dataset("deep", data=np.arange(150_000, dtype="i4"), chunks=(3,))
        f.create_dataset(
            "four_d",
            data=np.arange(2 * 3 * 4 * 50, dtype="f4").reshape(2, 3, 4, 50),
            chunks=(1, 2, 3, 7),
            compression="gzip",
            shuffle=True,
        )
        sparse = f.create_dataset("sparse", shape=(100, 100), chunks=(10, 10), dtype="f8")
        sparse[::30, ::30] = 1.0
        f.create_dataset("nothing_written", shape=(50,), chunks=(5,), dtype="i2")
        growing = f.create_dataset("unlimited", shape=(0, 4), maxshape=(None, 4), chunks=(3, 4))
        growing.resize((11, 4))
        growing[...] = 1
    checked = 0
    with h5py.File(path) as f:
        for name in ("deep", "four_d", "sparse", "nothing_written", "unlimited"):
            index = direct_chunks(path, f[name])
            assert index is not None, name
            assert as_records(index) == h5py_chunks(f[name]), name
            checked += 1
    assert checked == 5


def test_other_index_types_decline(tmp_path: Path) -> None:
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("fixed_array", data=np.arange(100.0), chunks=(10,))
        f.create_dataset("extensible", data=np.arange(10.0), chunks=(5,), maxshape=(None,))
    with h5py.File(path) as f:
        assert direct_chunks(path, f["fixed_array"]) is None
        assert direct_chunks(path, f["extensible"]) is None


def test_garbage_where_a_node_should_be_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(1000, dtype="i8"), chunks=(10,))
    with h5py.File(path) as f:
        index = direct_chunks(path, f["x"])
        assert index is not None
        header = int(h5py.h5o.get_info(f["x"].id).addr)
    data = bytearray(path.read_bytes())
    position = data.find(b"TREE", header)
    data[position : position + 4] = b"XXXX"
    broken = tmp_path / "broken.h5"
    broken.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError):
        read_v1_btree_chunk_index(
            LocalStore(tmp_path),
            broken.name,
            header_address=header,
            base_address=0,
            file_size=len(data),
            ndim=1,
        )


CORPUS_FILES = sorted(
    p
    for folder in ("hdf5", "netcdf4")
    for p in (CORPUS / folder).rglob("*")
    if p.is_file() and p.suffix != ".dmrpp"
)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_every_chunked_dataset_in_the_corpus_matches_h5py() -> None:
    compared = declined = 0
    for path in CORPUS_FILES:
        try:
            names = chunked_datasets(path)
        except (OSError, RuntimeError, ValueError):
            continue  # files h5py itself can't walk
        with h5py.File(path) as f:
            for name in names:
                try:
                    expected = h5py_chunks(f[name])
                except (OSError, RuntimeError, ValueError):
                    continue
                index = direct_chunks(path, f[name])
                if index is None:
                    declined += 1
                    continue
                assert as_records(index) == expected, f"{path}:{name}"
                compared += 1
    assert compared >= 100, f"only {compared} datasets compared ({declined} declined)"
