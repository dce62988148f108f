"""The NFLOG reader's fast path writes exactly the records of the full attribute walk."""

from __future__ import annotations

import struct
import time

import pytest

from edgepcap.agent.kernel import nflog_messages as nflog
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.formats import pcapfile as pcap
from edgepcap.formats.pcapng import INBOUND, OUTBOUND
from edgepcap.formats.protocol import Outbound

PACKET = (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_PACKET
IFINDEX_INDEV, HWADDR, PREFIX, SEQ_GLOBAL, HWTYPE, HWHEADER, HWLEN = 4, 8, 10, 13, 15, 16, 17


def attr(kind: int, value: bytes) -> bytes:
    return nflog._attr(kind, value)


def message(
    seq: int,
    payload: bytes,
    proto: int = nflog.ETH_P_IP,
    ts: tuple[int, int] | None = (1_700_000_000, 123_456),
    hw: bool = True,
    prefix: bytes | None = None,
    hook: int = 0,
) -> bytes:
    """One NFLOG packet message with the attributes in the kernel's order."""
    body = struct.pack("!BBH", 2, 0, 7)  # nfgenmsg: family, version, group
    body += attr(nflog.NFULA_PACKET_HDR, struct.pack("!HBx", proto, hook))
    if prefix is not None:
        body += attr(PREFIX, prefix + b"\0")
    body += attr(IFINDEX_INDEV, struct.pack("!I", 3))
    if hw:
        body += attr(HWADDR, struct.pack("!HH8s", 6, 0, b"\x02" * 6))
        body += attr(HWTYPE, struct.pack("!H", 1))
        body += attr(HWLEN, struct.pack("!H", 14))
        body += attr(HWHEADER, b"\x02" * 12 + struct.pack("!H", proto))
    if ts is not None:
        body += attr(nflog.NFULA_TIMESTAMP, struct.pack("!QQ", *ts))
    body += attr(nflog.NFULA_SEQ, struct.pack("!I", seq))
    body += attr(SEQ_GLOBAL, struct.pack("!I", seq + 1000))
    body += attr(nflog.NFULA_PAYLOAD, payload)
    header = nflog.NLMSGHDR.pack(16 + len(body), PACKET, 0, 0, 0)
    return header + body


def ipv4(size: int, marker: int) -> bytes:
    """An IPv4 packet of `size` bytes on the wire whose first `copied` bytes NFLOG gives."""
    return struct.pack("!BBH", 0x45, 0, size) + bytes([marker]) * (size - 4)


def ipv6(payload: int, marker: int) -> bytes:
    return struct.pack("!IHBB", 0x60000000, payload, 17, 64) + bytes([marker]) * (32 + payload)


def reader() -> NflogSocket:
    # The parsing state of a reader without its netlink socket: these tests feed it
    # crafted kernel messages (the real socket is exercised by every capture test).
    sock = NflogSocket.__new__(NflogSocket)
    sock.packets = sock.seq_lost = 0
    sock._next_seq = None
    sock._layout = None
    sock._stamp = None
    return sock


def both_ways(buffer: bytes) -> tuple[bytes, bytes, NflogSocket, NflogSocket]:
    fast, walked = reader(), reader()
    out = bytearray()
    fast.records(memoryview(buffer), out)
    reference = b"".join(pcap.record(p) for p in walked._parse(memoryview(buffer)))
    return bytes(out), reference, fast, walked


def test_the_fast_path_matches_the_walk_across_layout_changes_and_gaps():
    messages = [message(i, ipv4(100 + i, i)) for i in range(5)]
    messages += [message(5 + i, ipv6(60 + i, 50 + i), proto=nflog.ETH_P_IPV6) for i in range(3)]
    messages += [message(8, ipv4(40, 9), hw=False)]  # no link header: the layout changes
    messages += [message(9, ipv4(40, 10), hw=False), message(10, ipv4(1400, 11)[:160])]
    messages += [message(14, ipv4(64, 12), prefix=b"edgepcap")]  # 3 lost; a prefix
    messages += [message(15, ipv4(64, 13), prefix=b"edgepcap-longer")]
    fast, reference, f, w = both_ways(b"".join(messages))
    assert fast == reference
    assert f.seq_lost == w.seq_lost == 3
    assert f.packets == 13
    records = list(pcap.Reader([pcap.global_header() + fast], "x"))
    assert [len(p.data) for p in records][-3:] == [160, 64, 64]
    assert records[-3].orig_len == 1400  # the wire length comes from the IP header


def test_a_message_without_timestamp_is_stamped_now_and_relearnt():
    buffer = message(1, ipv4(80, 1)) + message(2, ipv4(80, 2), ts=None) + message(3, ipv4(80, 3))
    out = bytearray()
    sock = reader()
    assert sock.records(memoryview(buffer), out) == (3, 240)
    stamps = [p.ts_ns for p in pcap.Reader([pcap.global_header() + bytes(out)], "x")]
    assert stamps[0] == stamps[2] == 1_700_000_000_123_456_000
    assert stamps[1] > stamps[0]  # now, not zero


def test_an_unstamped_input_packet_turns_the_kernels_stamping_on_as_a_safety_net():
    # Linux >= 6.6 stamps logged packets itself; the machine-wide stamping stays off.
    sock = reader()
    sock.records(memoryview(message(1, ipv4(80, 1)) + message(2, ipv4(80, 2))), bytearray())
    assert sock._stamp is None
    # Output-hook packets are never stamped by the kernel: no reason to turn it on.
    sock.records(memoryview(message(3, ipv4(80, 3), ts=None, hook=3)), bytearray())
    assert sock._stamp is None
    # An older kernel: a prerouting packet without a stamp turns stamping on.
    sock.records(memoryview(message(4, ipv4(80, 4), ts=None, hook=0)), bytearray())
    assert sock._stamp is not None
    sock._stamp.close()


def test_a_boot_relative_stamp_becomes_the_readers_clock_on_both_paths():
    # Kernels before 6.6 pass on the monotonic delivery time of paced output packets.
    buffer = message(1, ipv4(80, 1)) + message(2, ipv4(80, 2), ts=(5_123, 7), hook=3)
    buffer += message(3, ipv4(80, 3))
    # No link header: the layout changes, so this one is walked, not read by the layout.
    buffer += message(4, ipv4(80, 4), ts=(5_124, 8), hook=3, hw=False)
    before = time.time_ns()
    fast, reference, _, _ = both_ways(buffer)
    for stream in (fast, reference):
        stamps = [p.ts_ns for p in pcap.Reader([pcap.global_header() + stream], "x")]
        assert stamps[0] == stamps[2] == 1_700_000_000_123_456_000
        for now in (stamps[1], stamps[3]):
            assert before - 1_000_000 <= now <= time.time_ns()


@pytest.mark.parametrize(
    ("release", "stamps"),
    [
        ("6.6.0", True),
        ("6.18.44-fc-v595", True),
        ("7.0", True),
        ("6.5.13-amd64", False),
        ("5.10.0-28-cloud-amd64", False),
        ("weird", False),
        ("", False),
    ],
)
def test_kernels_from_6_6_stamp_logged_packets_themselves(release: str, stamps: bool):
    assert nflog.stamps_logged_packets(release) is stamps


def test_a_truncated_message_ends_the_batch_without_a_bad_record():
    good = message(1, ipv4(80, 1)) + message(2, ipv4(80, 2))
    cut = message(3, ipv4(80, 3))[:-30]
    fast, reference, f, _ = both_ways(good + cut)
    assert fast == reference
    assert f.packets == 2


@pytest.mark.root  # a real NFLOG socket
def test_a_real_socket_asks_for_stamps_at_bind_only_on_kernels_before_6_6():
    sock = NflogSocket(2911, rcvbuf=1 << 20)
    try:
        assert (sock._stamp is None) is nflog.stamps_logged_packets()
    finally:
        sock.close()


def test_packets_the_machine_sent_are_listed_outbound_on_both_paths():
    # Hooks 0 (prerouting: arrived) and 3 (output: sent by the machine); the link header
    # goes away at the sixth message, so the fast path and the walk both see some.
    hooks = [0, 3, 3, 0, 0, 3, 0, 3]
    buffer = b"".join(message(i, ipv4(80, i), hook=hook, hw=i < 5) for i, hook in enumerate(hooks))
    outbound = Outbound()
    sock = reader()
    assert sock.records(memoryview(buffer), bytearray(), outbound, first=10) == (8, 640)
    assert outbound.runs == [[11, 13], [15, 16], [17, 18]] and outbound.known is None
    # The budgeted path hands packets over with their direction.
    packets = reader()._parse(memoryview(buffer))
    assert [p.direction for p in packets] == [OUTBOUND if h == 3 else INBOUND for h in hooks]


def test_many_messages_read_at_once_make_the_records_of_the_walk():
    # Enough messages for the numpy path: runs of one size (found at once), sizes that
    # change at every message (walked), a gap in the sequence, the layout changing, the
    # kernel's closing NLMSG_DONE, a message cut short at the end.
    sizes = [1400] * 40 + [60 + i for i in range(30)] + [64] * 40
    messages = [message(i, ipv4(size, i)) for i, size in enumerate(sizes)]
    messages += [message(200 + i, ipv4(80, i), hw=False, hook=3 * (i % 2)) for i in range(40)]
    done = nflog.NLMSGHDR.pack(20, 3, 2, 0, 0) + bytes(4)
    buffer = b"".join(messages) + done + message(240, ipv4(80, 1))[:-7]
    fast, reference, f, w = both_ways(buffer)
    assert fast == reference
    assert f.seq_lost == w.seq_lost == 200 - len(sizes)
    assert f.packets == len(sizes) + 40
    outbound = Outbound()
    sock = reader()
    sock.records(memoryview(buffer), bytearray(), outbound)
    assert outbound.runs == [[len(sizes) + i, len(sizes) + i + 1] for i in range(1, 40, 2)]
