"""A second oracle: the OPeNDAP DMR++ chunk manifests written next to some corpus files.

Where a DMR++ file and the parser describe the same chunks of a variable (same chunk shape,
chunks referenced rather than inlined), offsets and lengths must be equal.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from oracle import CORPUS, local_registry

from virtualize.errors import SkippedVariableWarning, VirtualizeError
from virtualize.manifests import INLINE, MISSING, ManifestArray
from virtualize.parsers import HDFParser

DAP = "{http://xml.opendap.org/ns/DAP/4.0#}"
DMRPP = "{http://xml.opendap.org/dap/dmrpp/1.0.0#}"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")


def dmrpp_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.dmrpp")) if CORPUS.is_dir() else []


def dmrpp_variables(path: Path) -> dict[str, tuple[tuple[int, ...] | None, list]]:
    """Variable path -> (chunk shape or None for contiguous, [(element position, offset,
    length)]). Paths come from the Group nesting (or a ``fullnamepath`` attribute)."""
    variables: dict[str, tuple[tuple[int, ...] | None, list]] = {}

    def walk(element: ElementTree.Element, prefix: str) -> None:
        for child in element:
            if child.tag == f"{DAP}Group":
                walk(child, f"{prefix}{child.get('name')}/")
                continue
            chunks = child.find(f"{DMRPP}chunks")
            if chunks is None or child.get("name") is None:
                continue
            name = f"{prefix}{child.get('name')}"
            for attribute in child.findall(f"{DAP}Attribute"):
                value = attribute.find(f"{DAP}Value")
                if attribute.get("name") == "fullnamepath" and value is not None and value.text:
                    name = value.text.strip().lstrip("/")
            sizes = chunks.find(f"{DMRPP}chunkDimensionSizes")
            shape = tuple(int(n) for n in sizes.text.split()) if sizes is not None else None
            entries = []
            for chunk in chunks.findall(f"{DMRPP}chunk"):
                position = chunk.get("chunkPositionInArray")
                where = tuple(int(i) for i in position.strip("[]").split(",")) if position else None
                entries.append((where, int(chunk.get("offset")), int(chunk.get("nBytes"))))
            variables[name] = (shape, entries)

    walk(ElementTree.parse(path).getroot(), "")
    return variables


def h5py_chunks(
    source: Path, name: str, array: ManifestArray
) -> dict[tuple[int, ...], tuple[int, int]]:
    """The chunks HDF5 itself lists for a variable, keyed like ``our_chunks``."""
    import h5py

    with h5py.File(source) as f:
        dataset = f[name]
        if dataset.chunks is None:
            key = tuple(0 for _ in array.manifest.shape_chunk_grid)
            return {key: (int(dataset.id.get_offset()), int(dataset.id.get_storage_size()))}
        records: list = []
        dataset.id.chunk_iter(records.append)
        return {
            tuple(o // c for o, c in zip(r.chunk_offset, dataset.chunks, strict=True)): (
                int(r.byte_offset),
                int(r.size),
            )
            for r in records
        }


def our_chunks(array: ManifestArray) -> dict[tuple[int, ...], tuple[int, int]] | None:
    """Referenced chunks by grid position, or None if any chunk is inline."""
    manifest = array.manifest
    if (manifest.path_ids == INLINE).any():
        return None
    chunks = {}
    for position in np.argwhere(manifest.path_ids != MISSING):
        key = tuple(int(i) for i in position)
        chunks[key] = (int(manifest.offsets[key]), int(manifest.lengths[key]))
    return chunks


def compare_file(dmrpp: Path) -> tuple[int, list[str]]:
    """How many variables the DMR++ file and the parser describe alike (all must be equal),
    and which of them DMR++ describes differently from h5py."""
    source = dmrpp.with_suffix("")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedVariableWarning)
            store = HDFParser(on_unsupported="skip")(str(source), local_registry(source))
    except VirtualizeError:
        return 0, []  # the parser refuses the file; test_corpus_hdf5 counts that
    compared = 0
    disagreements: list[str] = []
    for name, (chunk_shape, entries) in dmrpp_variables(dmrpp).items():
        array = store.group.get_node(name)
        if not isinstance(array, ManifestArray) or not entries:
            continue
        ours = our_chunks(array)
        if ours is None:
            continue  # inline chunks: nothing in the file to compare with
        if chunk_shape is None:
            if len(entries) != 1 or len(ours) != 1:
                continue  # contiguous data we split into several chunks: not the same chunks
            expected = {next(iter(ours)): (entries[0][1], entries[0][2])}
        else:
            if tuple(chunk_shape) != array.chunk_shape:
                continue
            expected = {
                tuple(p // c for p, c in zip(where, chunk_shape, strict=True)): (offset, length)
                for where, offset, length in entries
            }
        if ours != expected:
            # The corpus README: 58 of 60 DMR++ files match h5py's chunk info exactly. Where
            # one doesn't, h5py (the HDF5 library) decides, and must agree with us.
            assert ours == h5py_chunks(source, name, array), f"{source.name}:{name}"
            disagreements.append(f"{source.name}:{name}")
        compared += 1
    return compared, disagreements


def test_chunk_offsets_and_lengths_equal_dmrpp() -> None:
    files_compared = variables_compared = 0
    disagreements: list[str] = []
    for dmrpp in dmrpp_files():
        count, differing = compare_file(dmrpp)
        files_compared += bool(count)
        variables_compared += count
        disagreements.extend(differing)
    assert files_compared >= 40, f"only {files_compared} DMR++ files compared"
    differing_files = {label.split(":")[0] for label in disagreements}
    assert len(differing_files) <= 2, f"DMR++ differs from h5py and us: {disagreements}"
