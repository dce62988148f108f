"""The benchmark code measures what it says: counts checked on small runs."""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench import capture, forwarding, live, samples
from bench.figures import Figure, percentile
from bench.topology import SINK, pair, routed
from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.api.live import Hub, Piece, Stream
from edgepcap.formats import pcapfile as pcap
from edgepcap.formats import samples as records
from tests.support.forwarding import through_table
from tests.support.statistics import binomial_interval


def test_the_packet_count_matches_the_reader_and_refuses_a_cut_file(tmp_path: Path):
    packets = [pcap.Packet(1_700_000_000_000_000_000 + i, 1500, bytes(i % 300)) for i in range(999)]
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap.global_header() + b"".join(pcap.record(p) for p in packets))
    assert capture.count_packets(path) == 999 == len(list(pcap.Reader([path.read_bytes()], "x")))
    # Big-endian, with nanoseconds: the same count.
    header = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 101)
    body = b"".join(struct.pack(">IIII", 1, 2, 3, 3) + b"abc" for _ in range(5))
    (tmp_path / "be.pcap").write_bytes(header + body)
    assert capture.count_packets(tmp_path / "be.pcap") == 5
    (tmp_path / "empty.pcap").write_bytes(pcap.global_header())
    assert capture.count_packets(tmp_path / "empty.pcap") == 0
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])
    with pytest.raises(ValueError, match="cut off inside record 999"):
        capture.count_packets(path)
    path.write_bytes(whole + whole[24:32])  # half of the next record's header
    with pytest.raises(ValueError, match="cut off after record 999"):
        capture.count_packets(path)
    (tmp_path / "junk.pcap").write_bytes(b"not a pcap file at all, really")
    with pytest.raises(ValueError, match="not a PCAP file"):
        capture.count_packets(tmp_path / "junk.pcap")


def ip_stats(ns: str) -> dict[str, int]:
    """The IP counters of /proc/net/snmp as seen in `ns`."""
    text = subprocess.run(
        netns.argv(ns, ["cat", "/proc/net/snmp"]), capture_output=True, text=True, check=True
    ).stdout
    names, values = (line.split()[1:] for line in text.splitlines() if line.startswith("Ip:"))
    return dict(zip(names, map(int, values), strict=True))


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_both_capture_paths_account_for_every_packet_of_a_small_run():
    with pair() as topo:
        ours = capture.run_ours(topo, 2000, 64)
        theirs = capture.run_tcpdump(topo, 2000, 64)
        # After the captures' tables, the sink took every packet: rx's routing saw none.
        assert topo.counter(topo.rx, SINK) == 4000
        assert ip_stats(topo.rx)["InAddrErrors"] == 0
    # Every packet the rule matched is either in the file or counted as dropped.
    assert ours["offered"] == 2000 and ours["written"] + ours["dropped"] == 2000, ours
    assert ours["written"] >= 1900, ours
    # tcpdump keeps all of so small a run (0.5 MB against its 4 MiB buffer), its last
    # batch too: the kernel flushes a group's partial batch only after 1 s when the reader
    # does not ask for sooner, and a run_tcpdump that stopped it earlier lost ~10 packets.
    assert theirs["offered"] == 2000 and theirs["written"] == 2000, theirs


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_forwarding_parts_match_every_forwarded_packet_and_log_only_when_asked():
    with routed() as topo:
        assert topo.router is not None
        router = topo.at_router()
        for part in ("hook", "rules", "unread"):
            table = forwarding.capture_table(topo.router, part)
            # The bench runs these parts with nobody bound to the group; bound here, a
            # reader shows which part's rules would hand packets to NFLOG at all.
            reader = netns.run_in(topo.router, NflogSocket, 1502)
            try:
                router.trafgen(500, 64)
                logged = 0
                while packets := reader.receive(0.5):
                    logged += len(packets)
                assert table in nft.list_tables(topo.router)
                assert nft.counters(table, topo.router)[0] == (0 if part == "hook" else 500)
                assert logged == (500 if part == "unread" else 0)
            finally:
                reader.close()
                nft.remove(table, topo.router)
        # The router forwarded every packet of the three runs to the receiver, which
        # counted and dropped them: none reached its routing, whose error path would have
        # run on the router's core too.
        assert topo.counter(topo.rx, SINK) == 1500
        assert ip_stats(topo.rx)["InAddrErrors"] == 0
        assert ip_stats(topo.router)["ForwDatagrams"] == 1500


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_the_sampler_part_logs_one_packet_in_a_hundred_of_the_forwarded_traffic():
    logged, counted, delivered = through_table("sampler", 20_000)
    # One draw per packet: a binomial count, every drawn packet counted and logged.
    low, high = binomial_interval(20_000)
    assert low <= len(logged) <= high, (len(logged), (low, high))
    assert counted == len(logged)
    assert {len(p.data) for p in logged} == {20 + 8 + 64}  # whole: under the snaplen
    assert delivered == 20_000


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_the_sampler_variant_drawing_in_turn_logs_exactly_every_hundredth_packet():
    logged, counted, delivered = through_table("sampler_inc", 20_000)
    # Not a draw: a counter, so the 1st, 101st, ... forwarded packet, 200 of 20 000.
    assert len(logged) == counted == 200
    assert delivered == 20_000


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen, perf
def test_the_forwarding_step_gives_every_row_its_rounds_and_judges_it():
    unclocked = forwarding.perf_unavailable()
    r = forwarding.forwarding(2000, 64, rounds=2, parts=False, clocked_rounds=3)
    assert set(r["pps"]) == set(forwarding.CAPTURES) | set(forwarding.TABLES), r
    # The captures' modes in 2 rounds, the tables' in 3: their CPU figures' extra round.
    assert {len(r["pps"][m]) for m in forwarding.CAPTURES} == {2}
    assert {len(r["pps"][m]) for m in forwarding.TABLES} == {3}
    if unclocked is None:
        # The tables' runs were clocked: CPU time of the forwarding, for every run.
        assert set(r["cpu_ns"]) == set(forwarding.TABLES)
        assert all(len(v) == 3 and all(x > 0 for x in v) for v in r["cpu_ns"].values())
    else:
        assert r["cpu_ns"] is None and r["perf"] == unclocked
    figures = forwarding.rows(r)
    assert len(figures) == 5
    for f, rounds in zip(figures, (2, 2, 2, 3, 3), strict=True):
        assert f.judged_on is not None and f"{rounds} rounds" in f.judged_on
        assert f.line().endswith(f.judged_on)
    table_rows = figures[3:]
    steadier = "CPU per forwarded packet" if unclocked is None else "alternating runs"
    assert all(f.judged_on.startswith(f"judged on {steadier}") for f in table_rows)


def fake_runs(pps: dict[str, list[float]], ns: dict[str, list[float]] | None) -> dict:
    """A forwarding() result of 3 rounds: `pps` and `ns` over 1 M pps and 900 ns for all."""
    modes = forwarding.CAPTURES + forwarding.TABLES
    return {
        "pps": {m: [1e6] * 3 for m in modes} | pps,
        "cpu_ns": None if ns is None else {m: [900.0] * 3 for m in forwarding.TABLES} | ns,
        "perf": "cpu-clock" if ns else "perf is not installed",
    }


def test_a_table_row_is_judged_on_cpu_per_packet_not_on_the_rates():
    # The sampler's rates: its runs happened to meet a quiet machine (ratio of the
    # medians 1.2), but each costs +100 ns on 900: 0.9x by CPU, under 0.95x.
    r = fake_runs(
        {"plain": [1e6, 8e5, 1e6], "sampler": [1.2e6, 1.2e6, 9e5]},
        {"plain": [900.0, 900.0, 900.0], "sampler": [1000.0, 1000.0, 1010.0]},
    )
    sampler_row = forwarding.rows(r)[4]
    assert sampler_row.ratio == pytest.approx(1.2) and not sampler_row.ok
    assert "0.900 [0.891-0.900], +100 ns on 900 ns" in sampler_row.judged_on
    # Without perf, the row is judged on its rounds' ratios of rates (the round at 8e5 pps
    # no rule is compared with its neighbour, not with the others), and says why.
    r = fake_runs({"plain": [1e6, 8e5, 1e6], "sampler": [9.6e5, 7.8e5, 9.3e5]}, None)
    sampler_row = forwarding.rows(r)[4]
    assert sampler_row.ratio == pytest.approx(0.93)
    assert sampler_row.ok and "0.960 [0.930-0.975]" in sampler_row.judged_on
    assert "perf is not installed" in sampler_row.judged_on


def test_a_capture_row_is_judged_on_its_rounds_ratios():
    # Against tcpdump: one round where tcpdump's run met a loaded machine (2x) does not
    # carry the row; the median of the rounds' ratios (1.0) is under 1.10x.
    r = fake_runs({"captured": [7e5, 7e5, 7e5], "tcpdump": [7e5, 3.5e5, 7e5]}, None)
    row = forwarding.rows(r)[1]
    assert not row.ok and "1.000 [1.000-2.000]" in row.judged_on


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_tcpdump_on_the_router_device_keeps_every_forwarded_packet_of_a_small_run():
    with routed() as topo:
        assert topo.router is not None
        router = topo.at_router()
        r = capture.run_afpacket(router, "i0", 2000, 64)
        # Its BPF filter is the capture's: all 2 000, and no nftables table was needed.
        assert r["written"] == 2000, r
        assert nft.list_tables(topo.router) == []
        assert topo.counter(topo.rx, SINK) == 2000


@pytest.mark.root  # namespaces, nftables, tcpdump/trafgen
def test_mixed_traffic_gives_the_capture_one_packet_in_share():
    with routed() as topo:
        mixed = dataclasses.replace(topo, others=capture.MIXED_SHARE - 1).at_router()
        r = capture.run_ours(mixed, 1000, 64)
        # trafgen cycles through its frames: 1 in 10 to the capture's prefix, the rest
        # forwarded past its rules; the receiver saw them all.
        assert r["offered"] == r["written"] == 100 and r["dropped"] == 0, r
        assert topo.counter(topo.rx, SINK) == 1000
        assert ip_stats(topo.router)["ForwDatagrams"] == 1000


def test_synthetic_samples_belong_to_their_accounts():
    ids = [f"{i:032x}" for i in range(1, samples.ACCOUNTS + 1)]
    wire = samples.synth(20_000, time.time_ns() - 10**12, 10**12, ids)
    counts = []
    for i, account in enumerate(ids):
        mine = wire[wire["account"] == np.frombuffer(bytes.fromhex(account), dtype="V16")[0]]
        net = samples.account_net(i)
        assert records.in_network(mine, "dst", net).all()
        counts.append(len(mine))
    assert sum(counts) == 20_000
    assert counts[0] > 3 * counts[-1]  # Zipf: the head account is much busier
    assert (np.diff(wire["ts"]) >= 0).all()


def test_figure_lines_have_the_documented_columns():
    line = Figure("x", 2.0, 4.0, ">= 1", False, "pps", "", {}).line()
    assert line.split("\t") == ["x", "2 pps", "4", "0.500", ">= 1", "FAIL"]
    line = Figure("x", 2.0, 4.0, ">= 1", True, "pps", "", {}, judged_on="by y: 1.1").line()
    assert line.split("\t") == ["x", "2 pps", "4", "0.500", ">= 1", "PASS", "by y: 1.1"]


def test_percentiles_are_nearest_rank():
    hundred = [float(v) for v in range(100, 0, -1)]  # unsorted: 100 down to 1
    assert percentile(hundred, 50) == 50
    assert percentile(hundred, 99) == 99  # not the maximum
    assert percentile(hundred, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 99) == 10.0


def udp4(dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP datagram (checksums left 0: nothing here checks them)."""
    udp = struct.pack("!HHHH", 4000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), bytes(4))
    return ip + udp


def test_the_live_figure_reads_each_packet_of_the_stream_when_its_block_is_complete():
    # The stream as the API writes it: two machines' pieces, then their losses.
    base = 1_800_000_000_123_456_000
    sent = {}
    pieces = []
    for n in range(40):
        machine = ("ord01", "ord02")[n % 2]
        dport = live.PORT if n % 5 else live.WARM_PORT
        data = udp4(dport, live.TAG.pack(n, base - 30_000) + b"x" * 20)
        ts = base + n * 7_654_321_000 // 1000 * 1000  # microseconds, as copies are
        sent[n] = (ts, machine, dport)
        record = pcap.record(pcap.Packet(ts, len(data), data))
        pieces.append(Piece(machine, "ORD", n // 2, 1, record, []))
    hub = Hub()
    hub_viewer = hub.add("p", limit=1 << 30)
    stream = Stream("a capture", hub_viewer.channel)
    for piece in pieces:
        hub.publish("p", piece)
    body = bytearray(stream.head)
    stream.blocks(hub_viewer.take(), body)
    hub_viewer.dropped["ord01"] = 3
    stream.losses(hub_viewer, body, "capture ended: success")
    # Fed in chunks of 1 to 97 bytes: a block is read once its last byte has come.
    blocks = live.Blocks()
    ends, pos, index = [], 0, 0
    while pos < len(body):
        size = 1 + index * 13 % 97
        blocks.feed(bytes(body[pos : pos + size]), index)
        ends.append(pos + size)
        pos += size
        index += 1
    assert blocks.names == ["ord01", "ord02"] and blocks.resolution == [1000, 1000]
    assert len(blocks.packets) == 40 and not blocks.buffer
    block_ends = []
    at = 0
    while at < len(body):
        kind, length = live.BLOCK.unpack_from(body, at)
        at += length
        if kind == live.EPB:
            block_ends.append(at)
    for n, (arrival, kernel, interface, dport, payload) in enumerate(blocks.packets):
        ts, machine, sent_port = sent[n]
        assert (kernel, blocks.names[interface], dport) == (ts, machine, sent_port)
        assert live.TAG.unpack(payload) == (n, base - 30_000)
        assert arrival == next(i for i, end in enumerate(ends) if end >= block_ends[n])
    reader = live.Viewer("http://unused", "t")
    reader.blocks = blocks
    got = reader.measured()
    assert sorted(got) == [n for n in range(40) if n % 5]
    assert got[3][1:] == (sent[3][0], base - 30_000, 1)
