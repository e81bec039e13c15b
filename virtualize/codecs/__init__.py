"""Zarr v3 codecs that formats need and zarr lacks.

They are registered with zarr through the ``zarr.codecs`` entry points, so a repository
written by virtualize decodes in any zarr reader once this package is installed.
"""

from virtualize.codecs.cf import CFPackingCodec

__all__ = ["CFPackingCodec"]
