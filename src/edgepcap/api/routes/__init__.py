"""The API's routers, one module per resource.

* `pcaps` — `/accounts/{id}/pcaps`: create, list, get, stop, download, preview, colos.
* `ownership` — `/accounts/{id}/pcaps/ownership`: bucket challenges and validation.
* `live` — `/accounts/{id}/pcaps/{id}/stream`: a running capture, live, as pcapng.
* `agents` — `/agent/v1`: the agent protocol (register, heartbeat, jobs, reports, samples,
  live copies).
* `metrics` — `/metrics`, for the operator token only.

Routes authenticate (`api.deps`, `api.auth`), call the control plane with plain values and
map its refusals to HTTP (`api.errors.refused`); no capture rule lives here.
"""
