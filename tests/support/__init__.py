"""Drivers and helpers the tests share; fixtures stay in the conftest files.

* `api` — customer API request bodies and error answers.
* `agentkeys` — agent keys minted through the CLI, agents run with them.
* `browsers` — Chromium's flags and where screenshots go.
* `captures` — what a capture holds (tshark), against what the generator sent.
* `fuzz` — the API fuzzing checks and their server's settings (also `scripts/fuzz-api`).
* `kernel` — a veth pair in namespaces of the test's own, packets sent across it.
* `packets` — building packets and PCAP files.
* `samples` — sample records filed under an account.
* `sqlite` — SQLite's write-ahead log as the tests read it.
* `statistics` — the binomial bounds sampled counts are judged by.
"""
