"""ObjectStoreRegistry: which url prefixes map to which obstore store, and nothing else.

The registry is the allow-list of every byte virtualize reads. A url under no registered
prefix is refused with :class:`~virtualize.errors.UnauthorizedLocationError` before any request
is made, and urls are normalised first so that ``..`` segments cannot climb out of a prefix.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from obstore.store import HTTPStore, LocalStore, MemoryStore, S3Store

from virtualize.errors import UnauthorizedLocationError, remember_credentials
from virtualize.network import NetworkSettings

__all__ = ["ObjectStoreRegistry", "normalize_url", "sibling_url"]

ObjectStore = LocalStore | S3Store | HTTPStore | MemoryStore | Any

_DOT_ESCAPE = re.compile("%2e", re.IGNORECASE)


def normalize_url(url_or_path: str | os.PathLike[str]) -> str:
    """Return the canonical url of a local path or url.

    Local paths become absolute ``file:///`` urls; ``.`` and ``..`` segments are resolved
    lexically (without touching the file system) so that a url can be checked against a
    prefix. In remote urls, percent-encoded dots (``%2e``) count as dots, as servers read them.

    Parameters
    ----------
    url_or_path
        A local path (relative or absolute), a ``file://`` url, or a remote url such as
        ``s3://bucket/key``, ``gs://bucket/key``, ``https://host/path`` or ``memory:///key``.

    Returns
    -------
    str
        The normalised url.

    Raises
    ------
    ValueError
        For a ``file://`` url that names a host other than ``localhost`` (``file://data/x``
        is a typo of ``file:///data/x``, not a local path).
    """
    text = os.fspath(url_or_path)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file" or "://" not in text:
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(
                    f"{text!r} names the host {parts.netloc!r}; a local file url has three "
                    "slashes, as in file:///path/to/file"
                )
            path = unquote(parts.path)
        else:
            path = os.path.expanduser(text)
        absolute = posixpath.normpath(os.path.abspath(path))
        # POSIX keeps a leading "//" as implementation-defined; it is the same folder as "/".
        absolute = "/" + absolute.lstrip("/")
        if text.endswith("/") and not absolute.endswith("/"):
            absolute += "/"
        return "file://" + quote(absolute, safe="/:@!$&'()*+,;=-._~")
    path = _DOT_ESCAPE.sub(".", parts.path)
    trailing = path.endswith("/")
    normalised = posixpath.normpath(path) if path not in ("", "/") else path
    if normalised == ".":
        normalised = ""
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    if trailing and not normalised.endswith("/"):
        normalised += "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{parts.netloc}{normalised}{query}"


def sibling_url(base_url: str, name: str) -> str:
    """The url of ``name`` (a path a file gives for another file) next to ``base_url``.

    Relative names resolve against the folder of ``base_url``; absolute paths keep its
    scheme and host; a name that is itself a url is only normalised.

    Examples
    --------
    >>> sibling_url("s3://bucket/a/b.h5", "../c.h5")
    's3://bucket/c.h5'
    """
    name_parts = urlsplit(name)
    if len(name_parts.scheme) > 1:
        return normalize_url(name)
    parts = urlsplit(normalize_url(base_url))
    base_path = unquote(parts.path) if parts.scheme == "file" else parts.path
    joined = name if name.startswith("/") else posixpath.join(posixpath.dirname(base_path), name)
    joined = posixpath.normpath(joined)
    if parts.scheme == "file":
        return normalize_url(joined)
    return normalize_url(f"{parts.scheme}://{parts.netloc}{joined}")


def _as_prefix(url: str) -> str:
    prefix = normalize_url(url)
    return prefix if prefix.endswith("/") else prefix + "/"


class ObjectStoreRegistry:
    """Map url prefixes to obstore stores; refuse every url under no prefix.

    Parameters
    ----------
    stores
        A mapping ``{url_prefix: store}``, for example
        ``{"s3://my-bucket/": S3Store("my-bucket"), "file:///data/": LocalStore("/data")}``.
        A store registered at a prefix receives paths relative to that prefix.

    Examples
    --------
    >>> from obstore.store import LocalStore
    >>> registry = ObjectStoreRegistry({"file:///data/": LocalStore("/data")})
    >>> store, path = registry.resolve("file:///data/era5/2020.nc")
    >>> path
    'era5/2020.nc'
    """

    def __init__(self, stores: Mapping[str, ObjectStore] | None = None) -> None:
        self._stores: dict[str, ObjectStore] = {}
        #: Local paths already found to lead nowhere outside the registered folders.
        self._linkless: set[str] = set()
        for prefix, store in (stores or {}).items():
            self.register(prefix, store)

    def register(self, prefix: str, store: ObjectStore) -> None:
        """Authorise reads under ``prefix`` through ``store``.

        Parameters
        ----------
        prefix
            A url prefix such as ``"s3://bucket/path/"`` or ``"file:///data/"`` (a trailing
            ``/`` is added when missing, so a prefix always names a folder).
        store
            The obstore store that serves paths relative to ``prefix``.
        """
        self._stores[_as_prefix(prefix)] = store
        remember_credentials(getattr(store, "config", None))

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The registered prefixes, longest first."""
        return tuple(sorted(self._stores, key=len, reverse=True))

    def __contains__(self, url: object) -> bool:
        if not isinstance(url, str):
            return False
        try:
            return self._match(normalize_url(url)) is not None
        except ValueError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.prefixes)

    def __len__(self) -> int:
        return len(self._stores)

    def __repr__(self) -> str:
        return f"ObjectStoreRegistry({list(self.prefixes)!r})"

    def _match(self, url: str) -> str | None:
        for prefix in self.prefixes:
            if url.startswith(prefix):
                return prefix
        return None

    def resolve(self, url: str) -> tuple[ObjectStore, str]:
        """Return the store that serves ``url`` and the path inside that store.

        Parameters
        ----------
        url
            The url (or local path) to read.

        Returns
        -------
        tuple
            ``(store, path)``.

        Raises
        ------
        UnauthorizedLocationError
            If ``url`` lies under no registered prefix (after normalisation), or is a local
            path that a symbolic link leads out of every registered folder.
        """
        try:
            normalised = normalize_url(url)
        except ValueError as error:
            raise UnauthorizedLocationError(
                f"this url cannot be normalised ({error}), so it is not read", url=str(url)
            ) from error
        prefix = self._match(normalised)
        if prefix is None:
            raise UnauthorizedLocationError(
                "this location is not registered, so it is not read",
                url=str(url),
                hint=(
                    "Register its prefix with ObjectStoreRegistry.register(prefix, store) "
                    f"if you trust it (registered: {list(self.prefixes) or 'none'})"
                ),
            )
        path = normalised[len(prefix) :]
        if prefix.startswith("file://"):
            path = unquote(path)
            self._refuse_links_out(prefix, path, str(url))
        return self._stores[prefix], path

    def _refuse_links_out(self, prefix: str, path: str, url: str) -> None:
        # The prefix check above is lexical; a symbolic link inside a registered folder (a
        # Zarr store someone shared, say) could still lead the read anywhere on the machine.
        target = posixpath.normpath(posixpath.join(unquote(prefix[len("file://") :]), path))
        if target in self._linkless:
            return
        real = os.path.realpath(target)
        if real == target or any(
            real == folder or real.startswith(folder.rstrip("/") + "/")
            for folder in (
                os.path.realpath(unquote(other[len("file://") :]))
                for other in self._stores
                if other.startswith("file://")
            )
        ):
            # A chunk read resolves its file's url each time: check an existing file once, not
            # per chunk (a missing one may yet be created as a link).
            if os.path.lexists(target):
                if len(self._linkless) > 100_000:
                    self._linkless.clear()
                self._linkless.add(target)
            return
        raise UnauthorizedLocationError(
            f"this location is, or lies under, a symbolic link to {real!r}, which is not under "
            "a registered location, so it is not read",
            url=url,
            hint="Register the link's target with ObjectStoreRegistry.register if you trust it",
        )

    def check(self, urls: Iterable[str]) -> None:
        """Raise :class:`UnauthorizedLocationError` for the first url under no prefix."""
        for url in urls:
            self.resolve(url)

    @classmethod
    def for_urls(
        cls,
        urls: Iterable[str],
        *,
        quiet: bool = False,
        stacklevel: int = 3,
        network: NetworkSettings | None = None,
    ) -> ObjectStoreRegistry:
        """Build a registry that authorises exactly the locations of ``urls``.

        Local files authorise their folder; ``s3://`` urls their bucket, with credentials and
        region from the environment (``AWS_*`` variables); ``http(s)://`` urls their host.

        Parameters
        ----------
        urls
            The urls (or local paths) about to be opened.
        quiet
            Do not emit the warning that says which locations were registered.
        stacklevel
            Where the warning points, as for :func:`warnings.warn`.
        network
            Retries, backoff and timeouts of the ``s3://`` and ``http(s)://`` stores; by
            default :meth:`NetworkSettings.from_environment`.
        """
        network = NetworkSettings.resolve(network)
        registry = cls()
        for url in urls:
            normalised = normalize_url(url)
            if normalised in registry:
                continue
            prefix, store = _default_store_for(normalised, network)
            registry.register(prefix, store)
        if not quiet and len(registry):
            warnings.warn(
                f"registry=None: authorised reads under {list(registry.prefixes)}; "
                "pass an ObjectStoreRegistry to restrict or configure access",
                stacklevel=stacklevel,
            )
        return registry


def _default_store_for(url: str, network: NetworkSettings | None = None) -> tuple[str, ObjectStore]:
    network = NetworkSettings.resolve(network)
    parts = urlsplit(url)
    if parts.scheme == "file":
        folder = posixpath.dirname(unquote(parts.path))
        return "file://" + quote(folder.rstrip("/") + "/"), LocalStore(folder or "/")
    if parts.scheme == "s3":
        # obstore takes credentials, region and AWS_ENDPOINT_URL from the environment; an
        # http endpoint (an S3-compatible server) must be allowed explicitly
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and endpoint.startswith("http://"):
            return f"s3://{parts.netloc}/", S3Store(
                parts.netloc,
                endpoint=endpoint,
                virtual_hosted_style_request=False,
                **network.obstore_options(allow_http=True),
            )
        return f"s3://{parts.netloc}/", S3Store(parts.netloc, **network.obstore_options())
    if parts.scheme in ("http", "https"):
        base = f"{parts.scheme}://{parts.netloc}/"
        options = network.obstore_options(allow_http=parts.scheme == "http")
        return base, HTTPStore.from_url(base, **options)
    raise UnauthorizedLocationError(
        f"no default store for the {parts.scheme!r} scheme",
        url=url,
        hint="Pass an ObjectStoreRegistry with a store registered for this location",
    )
