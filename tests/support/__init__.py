"""Drivers and helpers the tests share; fixtures stay in the conftest files.

May import edgepcap and other modules of this package; never a test module or a conftest
(a test imports what it shares from here, and fixtures come to it from the conftest files).

Processes the tests run:
* `processes` — the `edgepcap` executable, `free_port`, `wait_for`, the operator token.
* `servers` — `edgepcap api` processes (`start_server`, `stop_server`), accounts in their
  database, a machine kept live through the agent protocol, moto's S3 server.
* `stack` — `Account` and `Stack`: an API server driven as a customer would.
* `postgres` — a throwaway PostgreSQL server (root: it runs as the postgres user).
* `clickhouse` — Debian's clickhouse-server with a configuration of the test's own.
* `lab` — a running `edgepcap lab` (root) and `Lab`, driving it as a customer would.
* `agentkeys` — agent keys minted through the CLI, agents run with them.
* `kernel` — a veth pair in namespaces of the test's own, packets sent across it (root).
* `forwarding` — packets forwarded past one of the bench's tables, and what it logged (root).
* `browsers` — Chromium's flags and where screenshots go.

What tests check and build:
* `api` — customer API request bodies and error answers.
* `captures` — what a capture holds (tshark), against what the generator sent.
* `control` — the control plane in process: a proven `file://` bucket, live machines and
  a full capture assigned to them, on a real SQLite database.
* `fuzz` — the API fuzzing checks and their server's settings (also `scripts/fuzz-api`).
* `packets` — building packets and PCAP files.
* `samples` — sample records filed under an account.
* `sqlite` — SQLite's write-ahead log as the tests read it.
* `statistics` — the binomial bounds sampled counts are judged by.
"""
