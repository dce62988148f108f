"""What the API fuzzing checks, and the server it runs against (the suite and scripts/fuzz-api)."""

from __future__ import annotations

# Captures may come as fast as the fuzzer sends them, so it reaches the handler past the
# one-sample-per-minute limit and the full-capture rate (tests/api/test_pcaps.py and
# tests/api/test_retention.py test the limits themselves).
SERVER_ENV = {"EDGEPCAP_SAMPLE_INTERVAL": "0", "EDGEPCAP_FULL_CAPTURE_RATE": "0"}


CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
