"""The edge agent: runs on every edge machine, captures in the kernel, writes to buckets.

* `agent` — the process: registration, heartbeats, jobs, the sampler.
* `worker` — one full capture: its table, the NFLOG read loop, budget, upload, reports.
* `sampler` — the continuous 1-in-100 sampler.
* `control_plane` — the agent's HTTP client of the agent protocol.
* `kernel/` — nftables, NFLOG, namespaces.

May import `formats`, `bucket_urls`, `destinations`, `beneath`; never `control`, `api`, `cli`
or `lab`.
"""
