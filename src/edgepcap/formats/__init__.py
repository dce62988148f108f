"""What both sides speak, and nothing else of edgepcap.

* `pcapfile` — PCAP files: the record layout and its writers (one packet; a numpy batch),
  streaming reader, merge by time.
* `pcapng` — pcapng blocks (section, interfaces, packets with direction, statistics) and
  PCAP streams merged by time into one pcapng stream, one named interface per machine.
* `packets` — decoding packets for previews and summaries.
* `filters` — `filter_v1`, typed and validated (with edgepcap's either-way `address` and
  `port`); the protocols that have ports; its summary.
* `samples` — sample records: the fixed-size rows agents ship and the stores keep.
* `protocol` — the agent protocol: registration, heartbeats, the long poll's answer,
  jobs, progress/end reports, answers, end reasons, the object name of a machine's part
  of a full capture, the runs of its own packets (`Outbound`) and live batches.

Imports nothing else of edgepcap.
"""
