"""`edgepcap`, the command line: the top layer, which may import every other.

* `app` — the command tree: the Typer app, its sub-apps, each command's name; `main`.
* `options` — what the commands share: `--data-dir`, `--database`, …; the customer's
  `--api`, `--json`, the `filter_v1` options; and small helpers.
* `server` — `api` and `up`: the control plane in the foreground (`up`: with an agent).
* `admin` — `accounts …` and `agents …`: accounts and agent keys, straight in the database.
* `agent` — `agent`: checks its flags, then execs into `python -m edgepcap.agent`.
* `lab` — `lab up|down|traffic`, over `edgepcap.lab`.
* `customer` — `pcaps …` and `buckets …`: the API through `edgepcap.client`;
  `console` — how they print (server text as text, tables, errors); `watch` — `pcaps
  watch` and `create --watch`: a live stream to stdout or a file.
* `traffic` — `traffic` and `triggers …`: the sampled-traffic view and capture triggers,
  through `edgepcap.client` as `customer`.
* `extcap` — `extcap install|uninstall`: the launcher of Wireshark's `edgepcap` interface.

Heavy imports (uvicorn, the API app, the database, Alembic) stay inside the commands, so
that `edgepcap --help` and the customer commands start fast.
"""

from edgepcap.cli.app import main

__all__ = ["main"]
