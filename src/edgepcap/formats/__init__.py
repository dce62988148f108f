"""What both sides speak, and nothing else of edgepcap.

* `pcapfile` — PCAP files: records, streaming reader and writer, merge by time.
* `packets` — decoding packets for previews and summaries.
* `filters` — `filter_v1`, typed and validated.
* `samples` — sample records: the fixed-size rows agents ship and the stores keep.

Imports nothing else of edgepcap.
"""
