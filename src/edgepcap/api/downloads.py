"""Reading a full capture back from its bucket, for download and preview.

Only the objects the capture's machines reported complete are read (never a listing of
the bucket, whatever else a customer put there), at most `read_max_objects` of them and,
for a download, `read_max_bytes` in all (StoreSettings). Each account has at most
`reads_per_account` downloads and previews open at once in one API process; one more is
answered 429 with Retry-After. A download holds its slot until its body is sent or the
client goes away.

A download is PCAP (Cloudflare's, the default) or pcapng (`?format=pcapng`, or an Accept
header asking for it): one interface per machine, named after it, and a section comment
naming the capture, so that Wireshark shows which machine saw each packet.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from edgepcap.api.errors import APIError, Code
from edgepcap.bucket_urls import DestinationError
from edgepcap.control.models import Pcap
from edgepcap.control.sample_captures import SAMPLE_RATE
from edgepcap.destinations import StoreSettings, parse
from edgepcap.formats import pcapng, protocol
from edgepcap.formats.filters import summary
from edgepcap.formats.pcapfile import Reader, merge
from edgepcap.formats.samples import SNAPLEN

PCAP_TYPE = "application/vnd.tcpdump.pcap"
PCAPNG_TYPE = "application/x-pcapng"
FORMATS = {"pcap": PCAP_TYPE, "pcapng": PCAPNG_TYPE}
# A stream of readers as one file: pcapfile.merge (PCAP) or a pcapng layout.
Layout = Callable[[list[Reader]], Iterator[bytes]]

RETRY_AFTER = 5  # seconds a refused download or preview is told to wait


class ReadSlots:
    """Per-account counters of reads in progress (in-process): downloads and previews, or
    live streams (`what` names them in the refusal)."""

    def __init__(self, what: str = "downloads or previews") -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self.what = what

    def take(self, account_id: str, limit: int) -> Slot:
        with self._lock:
            held = self._open.get(account_id, 0)
            if held >= limit:
                raise APIError(
                    429,
                    Code.READS_BUSY,
                    f"this account already has {held} {self.what} in progress (at "
                    f"most {limit} at once): retry in {RETRY_AFTER} s",
                    headers={"Retry-After": str(RETRY_AFTER)},
                )
            self._open[account_id] = held + 1
        return Slot(self, account_id)

    def _give_back(self, account_id: str) -> None:
        with self._lock:
            left = self._open.get(account_id, 1) - 1
            if left > 0:
                self._open[account_id] = left
            else:
                self._open.pop(account_id, None)


SLOTS = ReadSlots()


class Slot:
    """One read in progress; `release` is idempotent."""

    def __init__(self, slots: ReadSlots, account_id: str) -> None:
        self._slots: ReadSlots | None = slots
        self._account = account_id
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            slots, self._slots = self._slots, None
        if slots is not None:
            slots._give_back(self._account)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Merged:
    """The capture's objects opened and merged by time; `close` releases every object."""

    def __init__(
        self,
        conf: str,
        names: list[str],
        stores: StoreSettings,
        download: bool,
        layout: Layout = merge,
    ):
        self._open: list[Iterator[bytes]] = []
        if len(names) > stores.read_max_objects:
            raise DestinationError(
                f"the capture has {len(names)} files, more than the {stores.read_max_objects} "
                "this server merges: read them from the bucket directly"
            )
        dest = parse(conf, stores)
        try:
            sized = []
            for name in names:
                size, chunks = dest.open(name)
                self._open.append(chunks)
                sized.append((name, size, chunks))
            total = sum(size for _, size, _ in sized)
            if download and total > stores.read_max_bytes:
                raise DestinationError(
                    f"its files hold {total} bytes, more than the {stores.read_max_bytes} this "
                    f"server merges into one download: read {', '.join(names)} from the "
                    "bucket directly"
                )
            self.readers = [Reader(chunks, name) for name, _, chunks in sized]
            self.body = layout(self.readers)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for chunks in self._open:
            with contextlib.suppress(Exception):
                chunks.close()  # type: ignore[attr-defined]
        self._open = []


def stream(merged: Merged, slot: Slot) -> Iterator[bytes]:
    """The download's body; the objects and the slot are released however it ends."""
    try:
        yield from merged.body
    finally:
        merged.close()
        slot.release()


def wanted_format(format: str | None, accept: str | None) -> str:
    """`pcap` or `pcapng`: `?format=` when given, else pcapng only when the Accept header
    names its type and not PCAP's (curl's `*/*` and Cloudflare's clients get PCAP)."""
    if format is not None:
        return format
    types = {part.split(";")[0].strip().lower() for part in (accept or "").split(",")}
    return "pcapng" if PCAPNG_TYPE in types and PCAP_TYPE not in types else "pcap"


def comment(pcap: Pcap) -> str:
    """The pcapng section comment: which capture this is."""
    what = (
        f"sample capture (1 in {SAMPLE_RATE} packets, first {SNAPLEN} bytes)"
        if pcap.type == "simple"
        else f"full capture on {pcap.colo_name}"
    )
    started = f"; started by trigger {pcap.trigger_id}" if pcap.trigger_id else ""
    return f"edgepcap {what} {pcap.id}; filter: {summary(pcap.filter_v1 or {})}{started}"


def machines_layout(pcap: Pcap, colos: dict[str, str]) -> Layout:
    """pcapng of a full capture's objects: interface i is the machine of object i
    (`{machine}/pcap_{id}.pcap`), described with its colo; each packet flagged inbound or
    outbound as its machine reported (`protocol.Outbound`). `pcap.machines` is loaded."""
    parts = {m.machine: (m.outbound or [], m.directions_known) for m in pcap.machines}

    def layout(readers: list[Reader]) -> Iterator[bytes]:
        sources = []
        for reader in readers:
            machine = protocol.machine_of(reader.name)
            where = f"{colos[machine]} {machine}" if machine in colos else machine
            runs, known = parts.get(machine, ([], 0))
            # None: an agent from before directions said nothing of them.
            direction = protocol.directions(runs, 0 if known is None else known)
            sources.append(pcapng.Source(machine, f"edgepcap {where}", reader, direction))
        return pcapng.from_pcaps(sources, comment(pcap))

    return layout


def sample_pcapng(pcap: Pcap, data: bytes) -> bytes:
    """A sample capture's stored PCAP as pcapng: one interface, its samples."""
    reader = Reader([data], f"pcap_{pcap.id}.pcap")
    description = f"edgepcap samples of every colo, 1 in {SAMPLE_RATE} packets"
    return b"".join(pcapng.from_pcap(reader, "samples", description, comment(pcap)))
