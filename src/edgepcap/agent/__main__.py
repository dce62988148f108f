"""`python -m edgepcap.agent CONFIG`: the agent process that `edgepcap agent` execs into."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

# httpx imports its command-line tool (click, rich, pygments: ~5 MiB) whenever those are
# installed, and they are (the CLI uses them); the agent never runs it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from edgepcap.agent.agent import run_agent  # noqa: E402
from edgepcap.agent.worker import NFLOG_RCVBUF  # noqa: E402
from edgepcap.destinations import StoreSettings  # noqa: E402


def main() -> None:
    # Validated by `edgepcap agent`; the key comes in the environment, not argv.
    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per HTTP request would bury what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Out of the environment once read: the agent's children (nft) need not see it.
    key = os.environ.pop("EDGEPCAP_AGENT_KEY")
    run_agent(
        config["api"],
        key,
        config["colo"],
        config["machine"],
        config["netns"],
        StoreSettings.from_env(Path("/var/lib/edgepcap"), bucket_root=config["bucket_root"]),
        config["sample_rate"],
        config["nflog_rcvbuf"] or NFLOG_RCVBUF,
        Path(config["ca_file"]) if config.get("ca_file") else None,
    )


if __name__ == "__main__":
    main()
