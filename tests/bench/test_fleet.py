"""The fleet simulator speaks the agent protocol: a capture on a simulated colo runs on
every one of its machines and ends `success` when stopped (counts, not timings)."""

from __future__ import annotations

from bench import fleet_figure
from bench.fleet import Fleet
from tests.support.postgres import Postgres


def test_a_capture_on_a_simulated_colo_runs_everywhere_and_ends_on_stop(postgres: Postgres):
    names = fleet_figure.colo_names(2, 4)
    stand = fleet_figure.Stand(postgres.new_database(), names, heartbeat=2.0)
    try:
        fleet = Fleet(stand.api.url, stand.keys)
        fleet.start(timeout=30)
        try:
            assert fleet.counts.registered == 8
            assert {a.heartbeat_interval for a in fleet.agents} == {2.0}  # as handed out
            pcap = stand.create("F01")
            fleet_figure.wait_for(lambda: stand.parts(pcap, "running") == 4, 15)
            stand.stop(pcap)
            fleet_figure.wait_for(lambda: stand.status(pcap) == "success", 15)
            assert stand.parts(pcap, "done") == 4
            fleet_figure.wait_for(lambda: fleet.counts.ended == 4, 5)
            # Each machine's first running report and its end report, answered once.
            assert len(fleet.counts.running_at[pcap]) == len(fleet.counts.ended_at[pcap]) == 4
            # Only F01's machines got the job; the other colo's only beat and polled.
            assert fleet.counts.jobs == 4 and fleet.counts.errors == 0, fleet.counts
            fleet_figure.wait_for(lambda: fleet.counts.heartbeats >= 8, 5)  # every 2 s
        finally:
            fleet.stop()
    finally:
        stand.close()
