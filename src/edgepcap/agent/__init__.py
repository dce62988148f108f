"""The edge agent: runs on every edge machine, captures in the kernel, writes to buckets.

* `agent` — the process: registration, heartbeats, jobs, the sampler.
* `worker` — one full capture: its table, the NFLOG read loop, reports.
* `budget` — a limited capture's leases: what may be written, what waits, what to ask for.
* `upload` — probing the bucket; the writer thread that streams a capture into it.
* `live` — copies of a capture's records for live viewers, sent on a thread.
* `sampler` — the continuous 1-in-100 sampler; `sample_sink` — its batches straight into
  ClickHouse, when registration says so.
* `control_plane` — the agent's HTTP client of the agent protocol.
* `kernel/` — nftables, NFLOG, namespaces.

May import `formats`, `bucket_urls`, `destinations`, `beneath`; never `control`, `api`, `cli`
or `lab`.
"""
