"""Traffic forwarded through the bench's router past one of the bench's capture tables:
what the sampler's NFLOG group received, what the table counted, what arrived (root)."""

from __future__ import annotations

from bench import forwarding
from bench.topology import SINK, routed
from edgepcap.agent import sampler
from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket


def through_table(kind: str, packets: int) -> tuple[list, int, int]:
    """`packets` 64-byte packets forwarded past the bench's `kind` table: (the packets
    logged to the sampler's group, the table's counter, the packets the receiver got)."""
    with routed() as topo:
        assert topo.router is not None
        table = forwarding.capture_table(topo.router, kind)
        reader = netns.run_in(topo.router, NflogSocket, sampler.GROUP)
        try:
            topo.at_router().trafgen(packets, 64)
            logged = []
            while got := reader.receive(0.5):
                logged += got
            counted = nft.counters(table, topo.router)[0]
        finally:
            reader.close()
            nft.remove(table, topo.router)
        return logged, counted, topo.counter(topo.rx, SINK)
