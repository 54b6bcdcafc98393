"""A local Cloud Storage server on 127.0.0.1 for the gs:// tests: `gcp-storage-emulator` (a real
HTTP server speaking GCS's JSON API, used by gcsfs and so by etils.epath) plus the two parts of
the API it lacks and tensorstore (orbax's OCDBT checkpoints) relies on: object generations in
the `x-goog-generation` header of downloads and the `ifGenerationMatch` / `ifGenerationNotMatch`
preconditions of reads, uploads and deletes (OCDBT commits its manifest by conditional writes).
"""

import contextlib
import functools
import socket
from http import HTTPStatus
from typing import Callable, Iterator

from gcp_storage_emulator import server as gcs_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

BUCKET = "gengait-test"


def _generation(storage, bucket: str, name: str | None) -> int | None:
    """The live generation of bucket/name, None where there is no such object."""
    if not name:
        return None
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return None


def _object_name(request) -> str | None:
    """The object a request reads, deletes or uploads (None: a resumable upload's first call)."""
    if request.params.get("object_id"):
        return request.params["object_id"]
    if request.query.get("name"):
        return request.query["name"][0]
    if request.query.get("uploadType") == ["multipart"]:
        return request.data["meta"].get("name")
    return None


def _failed_precondition(request, live: int | None) -> HTTPStatus | None:
    """The status GCS answers when the request's generation preconditions fail, else None."""
    match = request.query.get("ifGenerationMatch")
    if match is not None and (live or 0) != int(match[0]):
        return HTTPStatus.PRECONDITION_FAILED
    not_match = request.query.get("ifGenerationNotMatch")
    if not_match is not None and live is not None and live == int(not_match[0]):
        return HTTPStatus.NOT_MODIFIED if request.method == "GET" else (
            HTTPStatus.PRECONDITION_FAILED)
    return None


def _with_generations(handler: Callable) -> Callable:
    """Wraps an object handler with generation preconditions and the generation header."""

    @functools.wraps(handler)
    def wrapped(request, response, storage, *args, **kwargs):
        bucket, name = request.params.get("bucket_name"), _object_name(request)
        status = _failed_precondition(request, _generation(storage, bucket, name))
        if status is not None:
            response.status = status
            return None
        out = handler(request, response, storage, *args, **kwargs)
        live = _generation(storage, bucket, name)
        if live is not None:
            response["x-goog-generation"] = str(live)
            response["x-goog-metageneration"] = "1"
        return out

    return wrapped


_WRAPPED = {objects.get, objects.download, objects.delete, objects.insert}


def _patched_handlers() -> tuple:
    """The emulator's routing table with the object handlers wrapped."""
    return tuple((regex, {m: _with_generations(h) if h in _WRAPPED else h
                          for m, h in handlers.items()})
                 for regex, handlers in gcs_server.HANDLERS)


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve() -> Iterator[dict[str, str]]:
    """Runs the server (in memory, bucket BUCKET); yields the environment clients need."""
    original = gcs_server.HANDLERS
    gcs_server.HANDLERS = _patched_handlers()
    port = _free_port()
    srv = gcs_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    srv.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield {"STORAGE_EMULATOR_HOST": url,  # gcsfs (etils.epath)
               "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax)
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: no credentials
               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # gcsfs: no gRPC bucket-type probe
    finally:
        srv.stop()
        gcs_server.HANDLERS = original
