"""How virtualize talks to object stores: retries, backoff and timeouts.

Every request to S3 or HTTP goes through obstore (reading source files) or Icechunk (the
repository and its virtual chunks). Both retry failed requests (connection resets, ``5xx``
answers such as S3's ``503 SlowDown``, timeouts, and for obstore responses cut short) with
exponential backoff. :class:`NetworkSettings` sets both from one place; the defaults ride out
the faults of a busy object store without making a dead one hang for long.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

__all__ = ["ENVIRONMENT_PREFIX", "NetworkSettings"]

#: Environment variables ``VIRTUALIZE_<FIELD>`` (e.g. ``VIRTUALIZE_MAX_RETRIES``) override the
#: defaults of :class:`NetworkSettings` wherever no settings are passed.
ENVIRONMENT_PREFIX = "VIRTUALIZE_"


@dataclass(frozen=True)
class NetworkSettings:
    """Retries, backoff and timeouts for the requests virtualize and Icechunk make.

    Parameters
    ----------
    max_retries
        How many times a failed request is tried again (0: never). Icechunk is given
        ``max_retries + 1`` tries.
    backoff_initial
        Seconds to wait before the first retry; each further wait doubles, with jitter.
    backoff_max
        The longest wait between two tries, in seconds.
    timeout
        Seconds after which a try of a request is abandoned and retried: for obstore the
        whole try, from connecting to the last byte (as obstore's own default); for
        Icechunk each wait for data, so that its large uploads are not cut off.
    connect_timeout
        Seconds to wait for a connection to be established.
    retry_timeout
        Seconds after a request's first try when obstore starts no further retry and
        raises (Icechunk stops after ``max_retries``).

    Notes
    -----
    obstore receives these as ``retry_config`` and ``client_options`` (``timeout``,
    ``connect_timeout``); Icechunk as ``StorageSettings(retries=StorageRetriesSettings(...),
    timeouts=StorageTimeoutSettings(...))`` on the repository config, which also governs its
    reads of virtual chunks. Where no settings are passed, :meth:`from_environment` reads
    ``VIRTUALIZE_MAX_RETRIES``, ``VIRTUALIZE_BACKOFF_INITIAL``, ``VIRTUALIZE_BACKOFF_MAX``,
    ``VIRTUALIZE_TIMEOUT``, ``VIRTUALIZE_CONNECT_TIMEOUT`` and ``VIRTUALIZE_RETRY_TIMEOUT``.

    Icechunk 2.3 does not retry a response whose body is cut short (the connection closes
    before ``Content-Length`` bytes arrived): such a read of the repository or of a virtual
    chunk fails with Icechunk's ``StorageError``. obstore retries it.

    Examples
    --------
    >>> import virtualize as vz
    >>> fast = vz.NetworkSettings(max_retries=3, timeout=5.0)
    >>> registry = vz.ObjectStoreRegistry.for_urls(
    ...     ["s3://bucket/a.nc"], network=fast, quiet=True)  # doctest: +SKIP
    >>> vz.ingest("s3://bucket/*.nc", "s3://bucket/repo", concat_dim="time",
    ...           network=fast)  # doctest: +SKIP
    """

    max_retries: int = 10
    backoff_initial: float = 0.1
    backoff_max: float = 15.0
    timeout: float = 30.0
    connect_timeout: float = 5.0
    retry_timeout: float = 180.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        for name in ("backoff_initial", "backoff_max", "timeout", "connect_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        if not (isinstance(self.retry_timeout, int | float) and self.retry_timeout > 0):
            raise ValueError(f"retry_timeout must be seconds > 0, not {self.retry_timeout!r}")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) is shorter than backoff_initial "
                f"({self.backoff_initial})"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> NetworkSettings:
        """The defaults, overridden by the ``VIRTUALIZE_*`` environment variables that are set.

        Parameters
        ----------
        environ
            The variables to read; ``os.environ`` by default.

        Raises
        ------
        ValueError
            A variable does not hold a valid value.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = ENVIRONMENT_PREFIX + item.name.upper()
            text = environ.get(name)
            if text is None or not text.strip():
                continue
            try:
                values[item.name] = int(text) if item.name == "max_retries" else float(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
        return cls(**values)

    @classmethod
    def resolve(cls, network: NetworkSettings | None) -> NetworkSettings:
        """``network`` itself, or the settings of the environment when it is None."""
        return network if network is not None else cls.from_environment()

    # -- obstore -------------------------------------------------------------------------------

    def obstore_retry_config(self) -> dict[str, Any]:
        """obstore's ``retry_config`` for a store."""
        return {
            "max_retries": self.max_retries,
            "retry_timeout": timedelta(seconds=self.retry_timeout),
            "backoff": {
                "init_backoff": timedelta(seconds=self.backoff_initial),
                "max_backoff": timedelta(seconds=self.backoff_max),
                "base": 2,
            },
        }

    def obstore_client_options(self, **options: Any) -> dict[str, Any]:
        """obstore's ``client_options``: the timeouts, plus ``options`` (e.g.
        ``allow_http=True``)."""
        return {
            "timeout": timedelta(seconds=self.timeout),
            "connect_timeout": timedelta(seconds=self.connect_timeout),
            **options,
        }

    def obstore_options(self, **client_options: Any) -> dict[str, Any]:
        """Keyword arguments for an obstore store's constructor.

        Parameters
        ----------
        **client_options
            Further ``client_options`` (``allow_http=True`` for an ``http://`` endpoint).

        Examples
        --------
        >>> from obstore.store import S3Store
        >>> store = S3Store("bucket", **NetworkSettings(max_retries=3).obstore_options())
        """
        return {
            "retry_config": self.obstore_retry_config(),
            "client_options": self.obstore_client_options(**client_options),
        }

    # -- icechunk ------------------------------------------------------------------------------

    def icechunk_storage_settings(self) -> Any:
        """``icechunk.StorageSettings`` with these retries and timeouts (for
        ``RepositoryConfig.storage`` and ``Repository.exists``)."""
        import icechunk

        return icechunk.StorageSettings(
            retries=icechunk.StorageRetriesSettings(
                max_tries=self.max_retries + 1,
                initial_backoff_ms=_milliseconds(self.backoff_initial),
                max_backoff_ms=_milliseconds(self.backoff_max),
            ),
            timeouts=icechunk.StorageTimeoutSettings(
                connect_timeout_ms=_milliseconds(self.connect_timeout),
                read_timeout_ms=_milliseconds(self.timeout),
            ),
        )

    @property
    def stream_timeout_seconds(self) -> int:
        """Whole seconds a response body may stall before Icechunk abandons it."""
        return max(1, math.ceil(self.timeout))


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
