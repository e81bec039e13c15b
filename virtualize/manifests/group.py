"""ManifestGroup: virtual arrays, attributes and subgroups, as one zarr group."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from virtualize.manifests.array import ManifestArray

__all__ = ["ManifestGroup"]


@dataclass(eq=False)
class ManifestGroup:
    """A zarr group of virtual arrays.

    Parameters
    ----------
    arrays
        Arrays of this group by name.
    groups
        Subgroups by name.
    attributes
        The group's attributes (JSON-serialisable).
    """

    arrays: dict[str, ManifestArray] = field(default_factory=dict)
    groups: dict[str, ManifestGroup] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = set(self.arrays) & set(self.groups)
        if clash:
            raise ValueError(f"names used by both an array and a group: {sorted(clash)}")

    def get_node(self, path: str) -> ManifestGroup | ManifestArray | None:
        """The group or array at a ``/``-separated path relative to this group."""
        node: ManifestGroup | ManifestArray = self
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, ManifestGroup):
                return None
            child = node.groups.get(part) or node.arrays.get(part)
            if child is None:
                return None
            node = child
        return node

    def walk(self, prefix: str = "") -> Iterator[tuple[str, ManifestGroup | ManifestArray]]:
        """Yield ``(path, node)`` for this group and everything below it."""
        yield prefix, self
        for name, array in self.arrays.items():
            yield _join(prefix, name), array
        for name, group in self.groups.items():
            yield from group.walk(_join(prefix, name))

    @property
    def nbytes(self) -> int:
        """Bytes held by every manifest in the group and its subgroups."""
        return sum(
            node.manifest.nbytes for _, node in self.walk() if isinstance(node, ManifestArray)
        )

    @property
    def nrefs(self) -> int:
        """File references in every manifest in the group and its subgroups."""
        return sum(
            node.manifest.nrefs for _, node in self.walk() if isinstance(node, ManifestArray)
        )

    def __eq__(self, other: object) -> bool:
        # The dataclass default compared arrays with ``==``, which is elementwise for
        # ManifestArray, so comparing two groups raised. Compare metadata and manifests.
        if not isinstance(other, ManifestGroup):
            return NotImplemented
        if self.attributes != other.attributes or self.groups != other.groups:
            return False
        if self.arrays.keys() != other.arrays.keys():
            return False
        return all(
            array.metadata.to_dict() == other.arrays[name].metadata.to_dict()
            and array.manifest == other.arrays[name].manifest
            for name, array in self.arrays.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ManifestGroup(arrays={sorted(self.arrays)}, groups={sorted(self.groups)}, "
            f"attributes={len(self.attributes)})"
        )

    def with_arrays(self, arrays: Mapping[str, ManifestArray]) -> ManifestGroup:
        """A copy of the group holding ``arrays`` instead of its own."""
        return ManifestGroup(dict(arrays), dict(self.groups), dict(self.attributes))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name
