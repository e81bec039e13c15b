"""Security: nothing is read outside the registry, ``..`` can't climb out of a container,
credentials never reach a repository, a commit, a log or an error, and ``virtualize verify``
flags sources changed after ingest.

Requests are observed, not assumed: :class:`Recorder` is an HTTP server on 127.0.0.1 that
records every request it receives. It stands in for an unregistered web server, for the
instance metadata service (obstore honours ``HTTP_PROXY``, so with the recorder as proxy every
request for ``http://169.254.169.254/`` would reach it), and, as a reverse proxy in front of
moto, for S3. Every refusal comes with a positive control: the same references with the
location registered do reach the recorder, so "0 requests" means something.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import obstore
import pytest
import xarray as xr
import zarr
from obstore.store import HTTPStore, LocalStore, S3Store

import virtualize as vz
from virtualize.errors import UnauthorizedLocationError
from virtualize.parsers import IcechunkParser, KerchunkParser, ZarrParser
from virtualize.registry import normalize_url

BUCKET = "public"  # created by the s3_endpoint fixture
PRIVATE = "private"

#: What the unregistered locations hold: it must never appear in anything read.
CANARY = b"CANARY-d41d8cd98f00-never-read"
#: What the metadata-service stand-in answers.
IMDS_ANSWER = b'{"AccessKeyId":"ASIA-IMDS-CANARY","SecretAccessKey":"imds-secret-canary"}'
IMDS = "http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role"


# -- a server that records what it is asked ----------------------------------------------------


class Recorder:
    """An HTTP/1.1 server on 127.0.0.1 (a free port) that records every request.

    Without ``upstream`` it answers ``GET`` / ``HEAD`` of any path with ``body`` (honouring a
    ``Range`` header); with ``upstream`` (``"http://127.0.0.1:port"``) it forwards every request
    there and relays the answer; with ``deny`` set it answers ``403 InvalidAccessKeyId`` as
    S3 does for credentials it does not know, quoting the access key id it was sent.
    """

    def __init__(self, body: bytes = CANARY, upstream: str | None = None) -> None:
        self.body = body
        self.upstream = upstream
        self.deny = False
        self.requests: list[tuple[str, str]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(
                self, status: int, headers: dict[str, str], data: bytes, size: int | None = None
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                # a HEAD answer has no body but the length of the one GET would return
                self.send_header("Content-Length", str(len(data) if size is None else size))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                recorder.requests.append((self.command, self.path))
                request_body = self._read_body()
                if recorder.deny:
                    key = re.search(r"Credential=([^/]+)/", self.headers.get("Authorization", ""))
                    text = (
                        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId"
                        "</Code><Message>The AWS Access Key Id you provided does not exist in "
                        f"our records.</Message><AWSAccessKeyId>{key.group(1) if key else ''}"
                        "</AWSAccessKeyId></Error>"
                    )
                    self._answer(403, {"Content-Type": "application/xml"}, text.encode())
                elif recorder.upstream is not None:
                    self._forward(request_body)
                else:
                    self._serve()

            def _serve(self) -> None:
                data = recorder.body
                found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if found is None:
                    self._answer(200, {"Accept-Ranges": "bytes"}, data, len(data))
                    return
                start = int(found.group(1))
                end = min(int(found.group(2) or len(data) - 1), len(data) - 1)
                self._answer(
                    206,
                    {"Content-Range": f"bytes {start}-{end}/{len(data)}"},
                    data[start : end + 1],
                )

            def _forward(self, request_body: bytes) -> None:
                host, port = str(recorder.upstream).removeprefix("http://").split(":")
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                skip = {"connection", "transfer-encoding", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(request_body))
                try:
                    connection.request(self.command, self.path, request_body, headers)
                    response = connection.getresponse()
                    data = response.read()
                    relayed = {k: v for k, v in response.getheaders() if k.lower() not in skip}
                    length = response.getheader("Content-Length")
                    size = int(length) if self.command == "HEAD" and length else None
                    self._answer(response.status, relayed, data, size)
                finally:
                    connection.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PROPFIND = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def touching(self, text: str) -> list[tuple[str, str]]:
        """The recorded requests whose path contains ``text``."""
        return [request for request in self.requests if text in request[1]]


@contextmanager
def imds_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A recorder every non-loopback plain-http request goes to (as its proxy): what obstore
    would send to ``169.254.169.254`` arrives here. Stores built afterwards use it."""
    with Recorder(IMDS_ANSWER) as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        yield proxy


def http_store(url: str) -> HTTPStore:
    return HTTPStore.from_url(url, client_options={"allow_http": True, "timeout": "10s"})


# -- Kerchunk references, hand written ---------------------------------------------------------


def kerchunk_json(url: str, templates: dict[str, str] | None = None) -> bytes:
    """Version-1 references to one uint8 array ``x`` of 16 values in two chunks of
    ``url``'s bytes 0-8 and 8-16."""
    document: dict[str, Any] = {
        "version": 1,
        "refs": {
            ".zgroup": json.dumps({"zarr_format": 2}),
            "x/.zarray": json.dumps(
                {
                    "shape": [16],
                    "chunks": [8],
                    "dtype": "|u1",
                    "compressor": None,
                    "filters": None,
                    "fill_value": 0,
                    "order": "C",
                    "zarr_format": 2,
                }
            ),
            "x/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["x"]}),
            "x/0": [url, 0, 8],
            "x/1": [url, 8, 8],
        },
    }
    if templates:
        document["templates"] = templates
    return json.dumps(document).encode()


def kerchunk_refs(
    folder: Path, name: str, url: str, *, templates: dict[str, str] | None = None
) -> Path:
    """:func:`kerchunk_json` written to ``folder / name``."""
    path = folder / name
    path.write_bytes(kerchunk_json(url, templates))
    return path


def read_x(store: vz.ManifestStore) -> bytes:
    return bytes(zarr.open_array(store, path="x", mode="r", zarr_format=3)[:].tobytes())


def refused_before_any_request(
    parse: Any, raw: str, *recorders: Recorder
) -> UnauthorizedLocationError:
    """Run ``parse()``: it must raise UnauthorizedLocationError naming ``raw``, quickly, with
    no request recorded by any of ``recorders``."""
    before = [len(r.requests) for r in recorders]
    started = time.perf_counter()
    with pytest.raises(UnauthorizedLocationError) as caught:
        parse()
    elapsed = time.perf_counter() - started
    # Kerchunk writers store local files as paths: either spelling names the location
    spellings = {raw, raw.removeprefix("file://"), unquote(raw.removeprefix("file://"))}
    with contextlib.suppress(ValueError):
        spellings.add(normalize_url(raw).rstrip("/"))
    assert any(s in str(caught.value) for s in spellings), (raw, str(caught.value))
    assert elapsed < 2, f"{raw}: refusing took {elapsed:.1f} s, as if something was contacted"
    assert [len(r.requests) for r in recorders] == before, raw
    return caught.value


def trusting_registry(data: Path, server: Recorder) -> vz.ObjectStoreRegistry:
    """The positive controls' registry: the data folder, the recorder and the metadata
    address (served by its stand-in) all registered."""
    return vz.ObjectStoreRegistry(
        {
            str(data): LocalStore(data),
            server.url: http_store(server.url),
            "http://169.254.169.254/": http_store("http://169.254.169.254/"),
        }
    )


def test_kerchunk_references_outside_the_registry_are_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.bin").write_bytes(CANARY)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_bytes(CANARY)
    monkeypatch.setenv("HOME", str(home))
    with imds_stand_in(monkeypatch) as imds, Recorder(CANARY) as server:
        registry = vz.ObjectStoreRegistry({str(data): LocalStore(data)})
        hostile = {
            "etc_passwd": "file:///etc/passwd",
            "home_tilde": "~/.aws/credentials",
            "home_absolute": str(home / ".aws" / "credentials"),
            "imds": IMDS,
            "imds_template": "{{meta}}/iam/security-credentials/node-role",
            "loopback": f"{server.url}/secret.bin",
            "other_bucket": "s3://other-bucket/secret.bin",
            "relative_climb": "../secret.bin",
            "file_climb": data.as_uri() + "/../secret.bin",
            "encoded_climb": data.as_uri() + "/%2e%2E/secret.bin",
        }
        templates = {"meta": "http://169.254.169.254/latest/meta-data"}
        for name, url in hostile.items():
            refs = kerchunk_refs(data, f"{name}.json", url, templates=templates)
            raw = url.split("}}")[-1] if "{{" in url else url
            error = refused_before_any_request(
                lambda refs=refs: KerchunkParser()(str(refs), registry), raw, server, imds
            )
            assert CANARY.decode() not in str(error)

        # The same references as Parquet (written by virtualize's own Kerchunk writer).
        safe = data / "safe.bin"
        safe.write_bytes(bytes(range(16)))
        template = vz.open_virtual_dataset(
            str(kerchunk_refs(data, "safe.json", safe.as_uri())),
            parser=KerchunkParser(),
            registry=registry,
            loadable_variables=[],
        )
        parquet = 0
        for name, url in hostile.items():
            if "{{" in url:
                continue
            target = data / f"{name}.parq"
            template.virtualize.rename_paths(url).virtualize.to_kerchunk(
                str(target), format="parquet"
            )
            refused_before_any_request(
                lambda target=target: KerchunkParser()(str(target), registry), url, server, imds
            )
            parquet += 1
        assert server.requests == [] and imds.requests == []

        # Positive controls: registered, the same references are read, from the recorders.
        trusting = trusting_registry(data, server)
        assert read_x(KerchunkParser()(str(data / "loopback.json"), trusting)) == CANARY[:16]
        assert read_x(KerchunkParser()(str(data / "imds.json"), trusting)) == IMDS_ANSWER[:16]
        assert server.touching("/secret.bin") and imds.touching("169.254.169.254")
    print(
        f"{len(hostile)} hostile Kerchunk JSON references and {parquet} Parquet ones refused "
        f"before any request; loopback recorder contacted 0 times, metadata-service stand-in "
        f"0 times. Positive controls (locations registered): loopback recorder contacted "
        f"{len(server.requests)} times, metadata-service stand-in {len(imds.requests)} times "
        f"({imds.requests[0][1]}), and the bytes read are theirs"
    )


# -- S3: another bucket, and a climb out of a registered prefix --------------------------------


def s3_store(bucket: str, endpoint: str, prefix: str | None = None) -> S3Store:
    """An obstore store of ``bucket`` (under ``prefix``) on the S3 server at ``endpoint``,
    with the credentials of the environment."""
    return S3Store(
        bucket,
        prefix=prefix,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def test_another_bucket_and_a_climb_out_of_a_prefix_are_never_requested(
    s3_endpoint: str,
) -> None:
    import boto3

    from virtualize.errors import ChunkReadError

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=PRIVATE
    )
    with Recorder(upstream=s3_endpoint) as s3:
        direct_public, direct_private = (
            s3_store(BUCKET, s3_endpoint),
            s3_store(PRIVATE, s3_endpoint),
        )
        obstore.put(direct_public, "allowed/data.bin", bytes(range(16)))
        obstore.put(direct_public, "other/secret.bin", CANARY)
        obstore.put(direct_private, "secret.bin", CANARY)
        registry = vz.ObjectStoreRegistry(
            {f"s3://{BUCKET}/allowed/": s3_store(BUCKET, s3.url, prefix="allowed")}
        )
        hostile = [
            f"s3://{PRIVATE}/secret.bin",
            f"s3://{BUCKET}/other/secret.bin",
            f"s3://{BUCKET}/allowed/../other/secret.bin",
            f"s3://{BUCKET}/allowed/%2e%2e/other/secret.bin",
            f"s3://{BUCKET}/allowed/./%2E%2E/%2e%2e/{PRIVATE}/secret.bin",
            f"s3://{BUCKET}/allowedx/secret.bin",
            "../other/secret.bin",
        ]
        for number, url in enumerate(hostile):
            obstore.put(direct_public, f"allowed/refs{number}.json", kerchunk_json(url))
            refused_before_any_request(
                lambda n=number: KerchunkParser()(f"s3://{BUCKET}/allowed/refs{n}.json", registry),
                url,
            )
        outside = [r for r in s3.requests if not r[1].startswith(f"/{BUCKET}/allowed/")]
        assert s3.requests and outside == [], outside
        refs_reads = len(s3.requests)

        # Encoded separators stay inside: obstore sends "..%2f" as a literal key, which S3
        # does not resolve, so the read fails without leaving the prefix.
        literal = f"s3://{BUCKET}/allowed/..%2fother/secret.bin"
        obstore.put(direct_public, "allowed/literal.json", kerchunk_json(literal))
        store = KerchunkParser()(f"s3://{BUCKET}/allowed/literal.json", registry)
        with pytest.raises(ChunkReadError):
            read_x(store)
        outside = [r for r in s3.requests if not r[1].startswith(f"/{BUCKET}/allowed/")]
        assert outside == [], outside

        # Positive control: with both buckets registered the private object is read, via the
        # recorder.
        trusting = vz.ObjectStoreRegistry(
            {
                f"s3://{BUCKET}/": s3_store(BUCKET, s3.url),
                f"s3://{PRIVATE}/": s3_store(PRIVATE, s3.url),
            }
        )
        assert (
            read_x(KerchunkParser()(f"s3://{BUCKET}/allowed/refs0.json", trusting)) == CANARY[:16]
        )
        assert (
            read_x(KerchunkParser()(f"s3://{BUCKET}/allowed/refs2.json", trusting)) == CANARY[:16]
        )
        assert s3.touching(f"/{PRIVATE}/secret.bin") and s3.touching("/other/secret.bin")
    print(
        f"{len(hostile)} hostile S3 references (another bucket, a sibling prefix, '..' and "
        f"'%2e%2e' climbs) refused before any request: the recording proxy in front of moto saw "
        f"{refs_reads} requests, all for the reference files under s3://{BUCKET}/allowed/; "
        f"'..%2f' stayed a literal key under the prefix. Positive control (buckets registered): "
        f"{len(s3.touching('secret.bin'))} requests for the secret objects"
    )


# -- Zarr stores: unregistered stores, and links out of registered ones ------------------------


def write_zarr(path: Path, values: bytes = bytes(range(16))) -> Path:
    """A zarr v3 store with one uint8 array ``x`` (two uncompressed chunks of 8)."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array("x", shape=(16,), chunks=(8,), dtype="u1", compressors=None)
    array[:] = np.frombuffer(values, dtype="u1")
    return path


def test_zarr_stores_outside_the_registry_and_links_out_of_it_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(CANARY)
    home = tmp_path / "home"
    write_zarr(home / ".aws" / "store.zarr")
    monkeypatch.setenv("HOME", str(home))
    write_zarr(outside / "elsewhere.zarr")
    # A store someone shared: one chunk object is a link to a file outside the registry, and
    # another store's metadata document is a link to a JSON file outside it.
    shared = write_zarr(data / "shared.zarr")
    (shared / "x" / "c" / "1").unlink()
    (outside / "chunk.bin").write_bytes(CANARY[:8])  # a chunk's worth of the canary
    (shared / "x" / "c" / "1").symlink_to(outside / "chunk.bin")
    (outside / "attributes.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"t": CANARY.decode()}})
    )
    attributes = write_zarr(data / "attributes.zarr")
    (attributes / "zarr.json").unlink()
    (attributes / "zarr.json").symlink_to(outside / "attributes.json")
    (data / "linked.zarr").symlink_to(outside / "elsewhere.zarr", target_is_directory=True)

    with imds_stand_in(monkeypatch) as imds, Recorder(CANARY) as server:
        registry = vz.ObjectStoreRegistry({str(data): LocalStore(data)})
        hostile: list[tuple[str, str | None]] = [
            ("http://169.254.169.254/latest/meta-data/", None),
            (f"{server.url}/store.zarr", None),
            ("file:///etc/", None),
            ("~/.aws/store.zarr", None),
            (f"{data}/../outside/elsewhere.zarr", None),
            (str(data / "shared.zarr"), "../../outside/elsewhere.zarr"),
            ("s3://other-bucket/store.zarr", None),
            (str(data / "linked.zarr"), None),
            (str(data / "attributes.zarr"), None),
        ]
        for url, group in hostile:
            error = refused_before_any_request(
                lambda url=url, group=group: ZarrParser(group=group)(url, registry),
                url.removeprefix("~/"),
                server,
                imds,
            )
            assert CANARY.decode() not in str(error)
        # The chunk that is a link: listed (a listing reads no object), refused when read,
        # whether read lazily, loaded while parsing, or written to a repository.
        store = ZarrParser()(str(shared), registry)
        with pytest.raises(UnauthorizedLocationError, match="symbolic link"):
            read_x(store)
        with pytest.raises(UnauthorizedLocationError, match="symbolic link"):
            vz.open_virtual_dataset(str(shared), registry=registry, loadable_variables=["x"])
        assert server.requests == [] and imds.requests == []

        # Positive controls: the link's target registered, the chunk is read from it; the
        # recorder registered, the parser does ask it (to list the store).
        trusting = vz.ObjectStoreRegistry(
            {
                str(data): LocalStore(data),
                str(outside): LocalStore(outside),
                server.url: http_store(server.url),
            }
        )
        assert read_x(ZarrParser()(str(shared), trusting)) == bytes(range(8)) + CANARY[:8]
        with pytest.raises(Exception):  # noqa: B017 (a recorder is no WebDAV server)
            ZarrParser()(f"{server.url}/store.zarr", trusting)
        assert server.requests
    print(
        f"{len(hostile)} hostile Zarr stores (metadata service, unregistered loopback server, "
        "/etc, ~, a '..' climb, a group climb, another bucket, a linked store, a linked "
        "metadata document) refused before any request, recorders contacted 0 times; a chunk "
        "linked out of the registry refused on read and on load. Positive controls: link "
        f"target registered -> its bytes read; recorder registered -> {len(server.requests)} "
        "requests"
    )


# -- Icechunk repositories whose references point outside the registry -------------------------


def test_icechunk_references_outside_the_registry_are_never_requested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import icechunk

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.bin").write_bytes(CANARY)
    (data / "link.bin").symlink_to(tmp_path / "secret.bin")
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_bytes(CANARY)
    with imds_stand_in(monkeypatch) as imds, Recorder(CANARY) as server:
        locations = {
            "imds": IMDS,
            "loopback": f"{server.url}/secret.bin",
            "etc_passwd": "file:///etc/passwd",
            "home": (home / ".aws" / "credentials").as_uri(),
            "other_bucket": "s3://other-bucket/secret.bin",
            "climb": data.as_uri() + "/../secret.bin",
            "encoded_climb": data.as_uri() + "/%2e%2e/secret.bin",
            "link": (data / "link.bin").as_uri(),
        }
        repository = icechunk.Repository.create(
            icechunk.local_filesystem_storage(str(data / "repo"))
        )
        session = repository.writable_session("main")
        root = zarr.open_group(session.store, mode="w", zarr_format=3)
        for name, location in locations.items():
            root.create_group(name).create_array(
                "x", shape=(16,), chunks=(8,), dtype="u1", compressors=None, fill_value=0
            )
            for chunk in (0, 1):
                session.store.set_virtual_ref(
                    f"{name}/x/c/{chunk}",
                    location,
                    offset=8 * chunk,
                    length=8,
                    validate_container=False,
                )
        session.commit("references everywhere")
        registry = vz.ObjectStoreRegistry({str(data): LocalStore(data)})
        refused = 0
        for name, location in locations.items():

            def parse(name: str = name) -> bytes:
                return read_x(IcechunkParser(group=name)(str(data / "repo"), registry))

            expected = (
                location
                if "%2e" not in location and "/../" not in location
                else str(tmp_path / "secret.bin")
            )
            refused_before_any_request(parse, expected, server, imds)
            refused += 1
        assert server.requests == [] and imds.requests == []

        trusting = trusting_registry(data, server)
        for name in ("loopback", "imds"):
            read_x(IcechunkParser(group=name)(str(data / "repo"), trusting))
        assert server.touching("/secret.bin") and imds.touching("169.254.169.254")
    print(
        f"an Icechunk repository with {refused} groups of hostile virtual references "
        "(metadata service, loopback server, /etc/passwd, ~/.aws, another bucket, '..' and "
        "'%2e%2e' climbs, a link out): every one refused, recorders contacted 0 times. "
        f"Positive control (registered): loopback {len(server.requests)} requests, "
        f"metadata-service stand-in {len(imds.requests)}"
    )


# -- '..' and virtual chunk containers ---------------------------------------------------------


def virtual_x(url: str, template: Path) -> xr.Dataset:
    """A virtual dataset of ``x`` (as in :func:`kerchunk_json`) whose chunks point at ``url``
    (its url table rewritten without any check, as a hand-built manifest could be)."""
    registry = vz.ObjectStoreRegistry({str(template.parent): LocalStore(template.parent)})
    dataset = vz.open_virtual_dataset(
        str(template), parser=KerchunkParser(), registry=registry, loadable_variables=[]
    )
    return dataset.virtualize.rename_paths(url)


def test_dot_dot_cannot_climb_out_of_a_virtual_chunk_container(tmp_path: Path) -> None:
    import icechunk

    from virtualize.writers.icechunk import authorize_containers, repository_config

    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "x.bin").write_bytes(bytes(range(16)))
    (secret / "x.bin").write_bytes(CANARY)
    template = kerchunk_refs(allowed, "refs.json", (allowed / "x.bin").as_uri())
    registry = vz.ObjectStoreRegistry({str(allowed): LocalStore(allowed)})
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    climbs = [
        allowed.as_uri() + "/../secret/x.bin",
        allowed.as_uri() + "/%2e%2e/secret/x.bin",
        allowed.as_uri() + "/./sub/../../secret/x.bin",
    ]
    for url in climbs:
        # checked against the repository's containers, and against a registry
        for options in ({}, {"registry": registry}):
            session = repository.writable_session("main")
            with pytest.raises(UnauthorizedLocationError) as caught:
                virtual_x(url, template).virtualize.to_icechunk(session.store, **options)
            assert "secret" in str(caught.value)
            assert not session.has_uncommitted_changes
    # A '..' that stays inside the container is written as the location it names.
    session = repository.writable_session("main")
    virtual_x(allowed.as_uri() + "/sub/../x.bin", template).virtualize.to_icechunk(session.store)
    session.commit("inside")
    readonly = repository.readonly_session("main")
    assert bytes(zarr.open_array(readonly.store, path="x", mode="r")[:].tobytes()) == bytes(
        range(16)
    )
    written = (
        IcechunkParser()(
            str(tmp_path / "repo"),
            vz.ObjectStoreRegistry({str(tmp_path): LocalStore(tmp_path)}),
        )
        .group.arrays["x"]
        .manifest.urls
    )
    assert written == ((allowed / "x.bin").as_uri(),)
    # A relative reference with encoded dots names a folder called "%2e%2e" inside: nothing
    # outside is read.
    store = KerchunkParser()(
        str(kerchunk_refs(allowed, "rel.json", "%2e%2e/secret/x.bin")), registry
    )
    assert store.group.arrays["x"].manifest.urls[0].startswith(allowed.as_uri() + "/")
    with pytest.raises(Exception) as missing:
        read_x(store)
    assert CANARY.decode() not in str(missing.value)
    print(
        f"{len(climbs)} '..' / '%2e%2e' climbs out of the container {allowed.as_uri()}/ refused by "
        "to_icechunk (checked against the repository's containers, and against a registry), "
        "nothing left "
        f"uncommitted; an inner '..' written as {written[0]} and read back; a relative "
        "'%2e%2e/...' reference stays inside the container"
    )


# -- credentials -------------------------------------------------------------------------------

KEY_ID = "AKIACANARYKEYID00042"
SECRET = "SECRETcanary0wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz"
TOKEN = "TOKENcanaryFQoGZXIvYXdzEJr//////////wEaDM"
CREDENTIALS = (KEY_ID, SECRET, TOKEN)


def readable(data: bytes) -> bytes:
    """``data`` and, for Icechunk's zstd-compressed files, its decompressed frame."""
    from numcodecs import Zstd

    start = data.find(b"\x28\xb5\x2f\xfd")
    if start < 0:
        return data
    try:
        return data + bytes(Zstd().decode(data[start:]))
    except Exception:  # not a frame after all: the raw bytes are all there is
        return data


def leaks(text: str | bytes) -> list[str]:
    """The canary credentials that ``text`` contains."""
    data = text.encode() if isinstance(text, str) else text
    return [value for value in CREDENTIALS if value.encode() in data]


def everything_said(error: BaseException) -> str:
    """An error as a user or a log sees it: str, repr, notes and the whole chained traceback."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def test_credentials_never_reach_a_repository_a_commit_a_log_or_an_error(
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from test_mfdataset import write_day

    from virtualize.ingest import ingest_history, open_repository

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    texts: dict[str, str | bytes] = {}
    errors: list[BaseException] = []
    local_files = [write_day(tmp_path / "local", day) for day in range(4)]
    (tmp_path / "local" / "corrupt.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)
    with Recorder(upstream=s3_endpoint) as s3:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
        bucket = s3_store(BUCKET, s3.url)
        for path in [*local_files, tmp_path / "local" / "corrupt.nc"]:
            obstore.put(bucket, f"archive/{path.name}", path.read_bytes())
        urls = [f"s3://{BUCKET}/archive/{path.name}" for path in local_files]
        corrupt = f"s3://{BUCKET}/archive/corrupt.nc"

        # 1. registry=None (credentials from the environment) into a local repository, with a
        # bad file skipped and recorded in the commit.
        local_repo = tmp_path / "repo"
        with pytest.warns(UserWarning):
            report = vz.ingest(
                [*urls[:2], corrupt],
                str(local_repo),
                concat_dim="time",
                on_error="skip",
                progress=False,
            )
        assert report.skipped
        texts["local ingest report"] = str(report)
        # 2. an explicit registry whose store holds the credentials, into an S3 repository
        registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
        s3_repo = f"s3://{BUCKET}/repo"
        report = vz.ingest(urls[:2], s3_repo, concat_dim="time", registry=registry, progress=False)
        texts["s3 ingest report"] = str(report)
        vds = vz.open_virtual_mfdataset(urls, registry=registry, concat_dim="time")
        store = vz.parsers.HDFParser()(urls[0], registry)
        texts["reprs"] = "\n".join(
            [repr(store), repr(registry), repr(vds), str(vds.virtualize.nrefs)]
        )
        vds.virtualize.to_kerchunk(str(tmp_path / "refs.json"), format="json")
        vds.virtualize.to_kerchunk(str(tmp_path / "refs.parq"), format="parquet")

        # 3. failures: an unregistered location, a bad file with on_error="raise", and
        # credentials the server rejects (403 InvalidAccessKeyId quotes the key id back).
        failures = [
            lambda: vz.ingest(
                [f"s3://{PRIVATE}/x.nc"],
                str(local_repo),
                concat_dim="time",
                registry=registry,
                progress=False,
            ),
            lambda: vz.ingest(
                [corrupt],
                str(tmp_path / "repo-raise"),
                concat_dim="time",
                registry=registry,
                progress=False,
            ),
            lambda: vz.open_virtual_dataset(urls[3], registry=registry),
        ]
        for number, failure in enumerate(failures):
            s3.deny = number == 2
            with pytest.raises(Exception) as caught:
                failure()
            errors.append(caught.value)
        s3.deny = True
        rejected = vz.ingest(
            [urls[2]],
            str(local_repo),
            concat_dim="time",
            registry=registry,
            on_error="skip",
            progress=False,
        )
        s3.deny = False
        assert rejected.skipped and "InvalidAccessKeyId" in str(rejected.skipped)
        texts["rejected ingest report"] = str(rejected)
        assert s3.touching("/archive/")

        # Everything written: the local repository's files, every object of the S3
        # repository, the Kerchunk references.
        written: dict[str, bytes] = {}
        for path in [*local_repo.rglob("*"), *(tmp_path / "refs.parq").rglob("*")]:
            if path.is_file():
                written[str(path)] = readable(path.read_bytes())
        written["refs.json"] = (tmp_path / "refs.json").read_bytes()
        for batch in obstore.list(bucket, prefix="repo/"):
            for row in batch:
                data = bytes(obstore.get(bucket, row["path"]).bytes())
                written[f"s3://{BUCKET}/{row['path']}"] = readable(data)
        s3_objects = sum(name.startswith("s3://") for name in written)
        assert s3_objects >= 4
        # Every commit: message, metadata; and virtualize's reading of them.
        commits = 0
        for location in (str(local_repo), s3_repo):
            repository, _ = open_repository(location)
            for snapshot in repository.ancestry(branch="main"):
                texts[f"commit {snapshot.id}"] = (
                    f"{snapshot.message}\n{json.dumps(snapshot.metadata, default=str)}"
                )
                commits += 1
            texts[f"history {location}"] = repr(ingest_history(location))
            texts[f"config {location}"] = repr(repository.config)
        assert any("InvalidAccessKeyId" in str(t) for t in texts.values()), "no 403 recorded"

    records = [f"{record.name} {logging.Formatter().format(record)}" for record in caplog.records]
    captured = capfd.readouterr()
    texts["stdout"], texts["stderr"] = captured.out, captured.err
    for number, error in enumerate(errors):
        texts[f"error {number}"] = everything_said(error)
    found = {
        name: leaks(value)
        for name, value in [*texts.items(), *written.items(), *enumerate(records)]
        if leaks(value)
    }
    assert found == {}, found
    print(
        f"ingested from moto with canary credentials (key id, secret, session token) into a "
        f"local and an S3 repository, with a corrupt file skipped, an unregistered location, "
        f"a corrupt file raised and a 403 InvalidAccessKeyId (quoting the key id) skipped; "
        f"grepped {len(written)} written files and objects ({s3_objects} in the S3 repository, "
        f"zstd frames decompressed, {sum(map(len, written.values()))} bytes), {commits} commits "
        f"(message and metadata), {len(records)} log records, stdout/stderr, {len(errors)} "
        "errors (str, repr, chained traceback), the reports, the Kerchunk JSON and Parquet, "
        "and the ManifestStore / registry / dataset reprs: 0 credentials found"
    )


# -- verify ------------------------------------------------------------------------------------


def test_verify_command_flags_a_source_modified_after_ingest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import h5py
    from test_mfdataset import write_day

    from virtualize.cli import main

    archive = tmp_path / "archive"
    files = [write_day(archive, day) for day in range(3)]
    repo = tmp_path / "repo"
    assert main(["ingest", str(archive / "day*.nc"), "--repo", str(repo), "--no-progress"]) == 0
    assert main(["verify", str(repo), "--sample", "1000"]) == 0
    before = capsys.readouterr().out
    # Same file, same size class, other values: what a reprocessing run in place does.
    with h5py.File(files[1], "r+") as opened:
        opened["tas"][...] = opened["tas"][...] + 1.5
    # A later modification time: Icechunk compares whole seconds, so a change within the
    # second of the ingest, with the new chunk bytes written in place, would go unnoticed.
    later = files[1].stat().st_mtime + 5
    os.utime(files[1], (later, later))
    code = main(["verify", str(repo), "--sample", "1000"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "MISMATCH" in out and files[1].name in out
    assert all(f.name not in out for f in (files[0], files[2]))
    print(
        f"ingested {len(files)} files with the CLI; 'virtualize verify' exited 0 "
        f"({before.strip().splitlines()[-1]}); after {files[1].name}'s values were modified in "
        f"place it exited {code}, naming only that file "
        f"({sum('MISMATCH' in line for line in out.splitlines())} MISMATCH lines)"
    )
