"""Migration 0007: bucket rows of older versions get their canonical destination_conf."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from edgepcap.control.db import MIGRATIONS, migrate

T0 = dt.datetime(2026, 11, 1)


def _upgrade(engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_aliases_of_one_bucket_become_its_one_canonical_row(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.db"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = create_engine(url)
    _upgrade(engine, "0003")  # the schema as the older code left it
    rows = [
        # id, account, destination_conf as sent, status, validated
        ("b1", "a1", "file:///r/B/", "pending", None),
        ("b2", "a1", "file:///r//B", "success", T0),
        ("b3", "a1", "FILE:///r/B", "failed", None),
        ("b4", "a2", "file:///r/B/", "pending", None),
        ("b5", "a1", "s3://pcaps/x/", "pending", None),
        ("b6", "a1", "s3://bucket:abc/", "pending", None),  # never usable: left alone
    ]
    with engine.begin() as conn:
        for account in ("a1", "a2"):
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, email, api_token_hash, api_key_hash, created)"
                    " VALUES (:id, :id, :id, :id, :id, :t)"
                ),
                {"id": account, "t": T0},
            )
        for n, (bucket, account, conf, status, validated) in enumerate(rows):
            conn.execute(
                text(
                    "INSERT INTO buckets (id, account_id, destination_conf, filename,"
                    " challenge_hash, status, submitted, validated)"
                    " VALUES (:id, :a, :conf, 'f', 'h', :status, :submitted, :validated)"
                ),
                {
                    "id": bucket,
                    "a": account,
                    "conf": conf,
                    "status": status,
                    "submitted": T0 + dt.timedelta(minutes=n),
                    "validated": validated,
                },
            )
    migrate(engine)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id, account_id, destination_conf, status FROM buckets ORDER BY id")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in found] == [
        ("b2", "a1", "file:///r/B", "success"),  # the proven one of three spellings
        ("b4", "a2", "file:///r/B", "pending"),  # another account's row stays its own
        ("b5", "a1", "s3://pcaps/x", "pending"),
        ("b6", "a1", "s3://bucket:abc/", "pending"),
    ]
