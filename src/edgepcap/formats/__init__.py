"""What both sides speak, and nothing else of edgepcap.

* `pcapfile` — PCAP files: records, streaming reader and writer, merge by time.
* `packets` — decoding packets for previews and summaries.
* `filters` — `filter_v1`, typed and validated.
* `samples` — sample records: the fixed-size rows agents ship and the stores keep.
* `protocol` — the agent protocol: jobs, progress/end reports, answers, end reasons,
  and the object name of a machine's part of a full capture.

Imports nothing else of edgepcap.
"""
