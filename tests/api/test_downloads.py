"""Reading a capture's objects back: whatever fails, every opened file is closed again."""

from __future__ import annotations

import gc
import os

import pytest

from edgepcap.api.downloads import Merged
from edgepcap.bucket_urls import DestinationError
from edgepcap.destinations import StoreSettings
from edgepcap.formats.pcapfile import LINKTYPE_RAW, PcapError, global_header


def open_fds() -> int:
    # Earlier tests' unreferenced sockets and files are closed by the collector whenever
    # it runs: let it run now, not in the middle of the count.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("failure", ["a later file missing", "too many bytes", "not a pcap"])
def test_a_read_that_fails_leaves_no_file_open(tmp_path, failure):
    root = tmp_path / "buckets"
    for machine in ("m1", "m2", "m3"):
        (root / "b" / machine).mkdir(parents=True)
        (root / "b" / machine / "pcap_x.pcap").write_bytes(global_header(LINKTYPE_RAW))
    if failure == "a later file missing":
        (root / "b" / "m3" / "pcap_x.pcap").unlink()
    if failure == "not a pcap":
        (root / "b" / "m2" / "pcap_x.pcap").write_bytes(b"not a pcap at all, not at all")
    cap = 50 if failure == "too many bytes" else 1 << 20
    stores = StoreSettings(bucket_root=root, read_max_bytes=cap)
    names = [f"m{i}/pcap_x.pcap" for i in (1, 2, 3)]
    before = open_fds()
    for _ in range(20):
        with pytest.raises((DestinationError, PcapError)):
            Merged(f"file://{root}/b", names, stores, download=True)
    assert open_fds() == before
