"""The HTTP side of the control plane: the Cloudflare-compatible customer API.

* `app` — the application factory: routers, error handlers, middleware, mounts.
* `routes/` — the routers: `pcaps`, `ownership` (buckets), `agents` (`/agent/v1`), `metrics`.
* `deps` — what the customer routes share: the authenticated caller, the id check.
* `guard` — the request guard: body size, content type, JSON refused before parsing.
* `access_log` — keeps agents' routine requests out of the access log.
* `errors`, `auth` — the envelope, error codes and refusals' mapping; authentication.
* `downloads`, `schemas`, `openapi` — merged downloads and previews; the customer shapes;
  the OpenAPI document.
* `wakeup` — waking long polls.
* `agent_keys` — agent keys verified by this process, kept while revocations reach it.
* `live`, `relay` — this process's live viewers and their pcapng; relaying machines' live
  copies between API processes.
* `web`, `timefmt` — security headers and the docs page; times.

May import `control`, `bucket_urls`, `destinations`, `beneath`, `formats`; never `cli` or `lab`.
"""
