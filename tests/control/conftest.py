"""Fixtures of the control-plane tests: a SQLite database of the test's own, and the
directory below which its `file://` buckets are made."""

from __future__ import annotations

import pytest

from edgepcap.control.db import open_database


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "data", None)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "buckets"
