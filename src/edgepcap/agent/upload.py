"""A capture's PCAP bytes on their way to its bucket: probing the bucket before anything
is captured, and the writer thread that streams the reader's batches into the object and
completes it (or abandons it when the capture failed)."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import obstore

from edgepcap.bucket_urls import DestinationError
from edgepcap.destinations import Destination, describe_failure
from edgepcap.direct_io import Chunk


class _End:
    """The end of a capture's byte stream: complete the upload, or abandon it."""

    def __init__(self, complete: bool) -> None:
        self.complete = complete


COMPLETE, ABANDON = _End(True), _End(False)
# Chunks queued for the writer at most (the reader waits beyond): a few MiB of slack for
# a bucket that is slow for a moment, beside the socket's receive buffer.
QUEUE = 3


class Upload:
    """The writer thread of one object: `put` batches, then `finish`. A failure sets
    `error` and `stop`, and the thread goes on draining so that `put` never blocks."""

    def __init__(
        self, dest: Destination, bucket: Any, object_name: str, name: str, stop: threading.Event
    ) -> None:
        self.dest = dest
        self.bucket = bucket
        self.object_name = object_name
        self.stop = stop
        self.error: BaseException | None = None
        self._out: queue.Queue[bytes | bytearray | Chunk | _End] = queue.Queue(maxsize=QUEUE)
        writer = dest.writer(object_name)
        self._thread = threading.Thread(target=self._run, args=(writer,), name=name, daemon=True)
        self._thread.start()

    def put(self, chunk: bytes | bytearray | Chunk) -> None:
        """Queue bytes, or a `Chunk` filled from the object's position (its `written` is
        set once the writer is done with it)."""
        self._out.put(chunk)

    def finish(self, complete: bool) -> None:
        """Complete the object (or abandon it) and wait for the thread."""
        self._out.put(COMPLETE if complete else ABANDON)
        self._thread.join()

    def _run(self, writer: Any) -> None:
        finished = False
        dest = self.dest
        try:
            while True:
                chunk = self._out.get()
                if isinstance(chunk, _End):
                    finished = True
                    break
                if isinstance(chunk, Chunk):
                    writer.write_chunk(chunk)
                    chunk.written = True
                else:
                    writer.write(chunk)
            if not chunk.complete:
                # A local staging file is removed, an S3 multipart upload never completed.
                writer.abort()
                return
            # A file bucket removed or replaced meanwhile fails the part, saying so (the
            # writer's own check would only say that its folder moved).
            dest.check_same_bucket(self.bucket, self.object_name)
            writer.close()
        except Exception as exc:
            self.error = (
                exc
                if isinstance(exc, DestinationError)
                else DestinationError(describe_failure(dest, "write", self.object_name, exc))
            )
            self.stop.set()
            with contextlib.suppress(Exception):
                writer.abort()
            # Keep draining so that the reader never blocks on a full queue.
            while not finished and not isinstance(self._out.get(), _End):
                pass


def probe(dest: Destination, object_name: str) -> None:
    """Fail fast when the bucket cannot be reached, before anything is captured.

    A file bucket: the machine's directory is opened (made if missing) below the bucket
    root without following links, as the writer will; a link there fails the capture.
    """
    if dest.root is not None:
        dest.writer(object_name).abort()
        return
    try:
        stream = obstore.list(dest.store, object_name.rsplit("/", 1)[0], chunk_size=1)
        next(iter(stream), None)
    except Exception as exc:
        raise DestinationError(describe_failure(dest, "list", object_name, exc)) from exc
