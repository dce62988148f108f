"""The control plane's rules and storage, below the HTTP layer.

* `accounts`, `credentials` — accounts, their prefixes, hashed secrets.
* `captures` — admitting captures, getting and stopping one, expiry.
* `reads` — the checked read path: captures as plain rows, with the credentials' check.
* `sample_captures` — the sample interval; answering sample captures from the store.
* `settings` — every setting an API process reads, once, at its start.
* `full_rate`, `retention` — the full-capture rate and the retention of ended captures.
* `supervisor` — the API process's thread that sweeps lost machines, expiry, retention.
* `execution` — a full capture across machines: assignment, progress, leases, stops, lost
  machines; `completion` — closing it, once, when no machine works on it any more.
* `polls` — what an agent's long poll finds: its new jobs, the stops of what it runs.
* `fleet` — agent keys, registration, liveness, `colo_name` resolution.
* `changes` — word of changes (and of revoked agent keys) between API processes (NOTIFY).
* `live` — who watches which capture live, and where each API process takes relayed copies.
* `buckets` — an account's buckets: ownership challenges, their proof, the lookup.
* `errors` — the refusals (`Refused` and one subclass per reason) the rules above raise.
* `models`, `db`, `migrations/` — tables, the database, Alembic migrations.
* `samples/` — the sample stores and what they admit; `samples/direct` — agents inserting
  into ClickHouse themselves.

May import `formats`, `bucket_urls`, `destinations`; never `api`, `cli`, `agent` or `lab`.
"""
