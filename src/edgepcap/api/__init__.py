"""The HTTP side of the control plane: the Cloudflare-compatible customer API.

* `app` — the application factory: routers, error handlers, middleware, mounts.
* `guard` — the request guard: body size, content type, JSON refused before parsing.
* `access_log` — keeps agents' routine requests out of the access log.
* `errors`, `auth` — the envelope and error codes; authentication.
* `pcaps`, `ownership`, `downloads`, `schemas`, `openapi` — the customer routes, their
  shapes and the OpenAPI document.
* `agents`, `wakeup` — the agent protocol's routes; waking long polls.
* `metrics`, `web`, `timefmt` — `/metrics`; security headers and the docs page; times.

May import `control`, `bucket_urls`, `destinations`, `beneath`, `formats`; never `cli` or `lab`.
"""
