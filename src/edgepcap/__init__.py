"""edgepcap: on-demand packet captures from every edge machine.

The packages are layers; each imports only those below it (`lint-imports` checks it):

* `cli` — the `edgepcap` command: servers, administration, the agent, the lab, customers.
* `api` — the HTTP side of the control plane: the Cloudflare-compatible API, the agent
  protocol's routes, the dashboard and docs pages.
* `lab` — edge machines, a client and customers in network namespaces, with real agents.
* `control` — the control plane's rules and storage: accounts, captures, the fleet,
  execution across machines, buckets' ownership, the metadata database, sample stores.
* `agent` — the edge agent: kernel capture (`agent.kernel`), the sampler, its workers.
* `bucket_urls`, `destinations`, `beneath`, `direct_io` — bucket URLs and bucket I/O, used
  by both sides.
* `formats` — what both sides speak: PCAP files, packets, filters, sample records.
* `client` — the customer's HTTP client (the CLI's and scripts').
* `extcap` — the `edgepcap` interface in Wireshark (its extcap protocol), over `client`.
"""
