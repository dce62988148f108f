"""Sampled traffic history: 1-in-N, 160-byte samples kept for 24 h, queried by sample
captures and counted for the traffic view.

* `store.py`: the interface every backend answers, its query, and the backend factory;
  `admission.py`: what ingest refuses of a batch before any tenancy check.
* `segments.py`: the embedded backend (files per partition and account);
  `sealing.py`: its partitions compacted and its hours summed once no sample can land.
* `clickhouse.py`: the scale-out backend (its tables, sort keys and partitions explained);
  `chsql.py`: its SQL (tables, window conditions, counts capped per hour); `chhours.py`:
  its hour summaries for the traffic view; `direct.py`: agents inserting into it themselves.
* `traffic.py`: the traffic view's query, the reference count and the estimates;
  `tally.py`: counts summed and capped per hour; `hourcols.py`: an hour's samples column by
  column, for filtered queries; `coded.py`: those columns counted per (key, bucket).
"""
