"""The access-log filter: keeps agents' routine requests out of uvicorn's access log."""

from __future__ import annotations

import logging
import re

from edgepcap.api.routes import agents


class QuietAgents(logging.Filter):
    """Keeps agents' routine requests out of the access log: each agent polls, beats,
    reports progress and sends samples several times a second, which buried everything
    else. Their failures (status 400 and up) and registrations are still logged."""

    ROUTINE = re.compile(
        re.escape(agents.PREFIX)
        + r"/(jobs|heartbeat|prefixes|samples|captures/[^/?]+/(report|live))"
        + r"(\?|$)"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access records: (client, method, path and query, http version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[4], int):
            return not (args[4] < 400 and self.ROUTINE.match(str(args[2])))
        return True
