"""Which bucket URLs a server accepts (destinations.parse) and the store settings it reads
from its environment (StoreSettings.from_env), in process: nothing is written or reached.

`file://` buckets must be directories strictly below the server's bucket root, however
the URL is spelt (`bucket_urls` canonical forms; no `..`, no shared string prefix); cloud
buckets need credentials the server was given for their scheme.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepcap.bucket_urls import DestinationError
from edgepcap.destinations import CREDENTIAL_ENV, READ_MAX_BYTES, StoreSettings, parse

ROOT = Path("/x/buckets")  # parse is textual: the directories need not exist
NONE = StoreSettings(bucket_root=ROOT)  # and no cloud credentials


@pytest.mark.parametrize(
    ("conf", "canonical", "bucket"),
    [
        ("file:///x/buckets/b", "file:///x/buckets/b", "b"),
        ("file:///x/buckets/acme/pcaps", "file:///x/buckets/acme/pcaps", "acme/pcaps"),
        ("file:///x/buckets//acme///pcaps/", "file:///x/buckets/acme/pcaps", "acme/pcaps"),
        ("FILE:///x/buckets/b-2_c.d", "file:///x/buckets/b-2_c.d", "b-2_c.d"),
    ],
)
def test_a_bucket_below_the_root_is_accepted(conf, canonical, bucket):
    dest = parse(conf, NONE)
    assert (dest.conf, dest.scheme, dest.root, dest.bucket) == (canonical, "file", ROOT, bucket)
    assert dest.path == f"/x/buckets/{bucket}"


@pytest.mark.parametrize(
    "conf",
    [
        # the root itself holds every tenant's buckets
        "file:///x/buckets",
        "file:///x/buckets/",
        "file:///x/buckets//",
        # outside it
        "file:///",
        "file:///x",
        "file:///etc/b",
        "file:///y/buckets/b",
        # sharing only a string prefix with it
        "file:///x/buckets2/b",
        "file:///x/buckets-old/b",
        "file:///x/buckets2",
        "file:///x/bucketsb",
        # climbing out of it, however spelt
        "file:///x/buckets/../b",
        "file:///x/buckets/../buckets2/b",
        "file:///x/buckets/b/../../etc",
        "file:///x/buckets/b/..",
        "file:///x/buckets/./b",
        "file:///x/buckets/%2e%2e/b",
        "file:///x/buckets/b/%2E%2E/%2E%2E/etc",
        "file:///x/buckets/..%2fb",
        "file:///x/buckets/b%2f..%2f..",
        "file:///x/buckets/b\\..\\..",
        # not a path at all
        "file://host/x/buckets/b",
        "file:x/buckets/b",
        "file:///x/buckets/b?region=us-east-1",
    ],
)
def test_anything_but_a_directory_below_the_root_is_refused(conf):
    with pytest.raises(DestinationError):
        parse(conf, NONE)


def test_the_refusal_names_the_root():
    with pytest.raises(DestinationError, match="below this server's bucket root /x/buckets"):
        parse("file:///x/buckets2/b", NONE)


def test_the_root_from_the_environment_is_resolved(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    stores = StoreSettings.from_env(tmp_path, {"EDGEPCAP_BUCKET_ROOT": f"{tmp_path}/a/../link"})
    assert stores.bucket_root == tmp_path / "real"
    assert parse(f"file://{tmp_path}/real/b", stores).bucket == "b"
    # Only the resolved spelling is below it: the link and `..` are not.
    for conf in (f"file://{tmp_path}/link/b", f"file://{tmp_path}/a/../real/b"):
        with pytest.raises(DestinationError):
            parse(conf, stores)


def test_the_root_defaults_to_the_data_dir_and_an_option_overrides_the_environment(tmp_path):
    assert StoreSettings.from_env(tmp_path, {}).bucket_root == tmp_path / "buckets"
    chosen = StoreSettings.from_env(
        tmp_path, {"EDGEPCAP_BUCKET_ROOT": "/from/env"}, bucket_root=str(tmp_path / "opt")
    )
    assert chosen.bucket_root == tmp_path / "opt"


CLOUD = {"s3": "s3://bucket/dir", "gs": "gs://bucket/dir", "az": "az://container/dir"}


@pytest.fixture
def azure_account(monkeypatch):
    """obstore's Azure client wants an account name from the process environment."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devaccount")


@pytest.mark.parametrize("scheme", sorted(CLOUD))
def test_cloud_buckets_are_refused_without_credentials(scheme):
    with pytest.raises(DestinationError, match=f"no credentials for {scheme}://") as refused:
        parse(CLOUD[scheme], NONE)
    assert CREDENTIAL_ENV[scheme][0] in str(refused.value)  # says what to set


@pytest.mark.parametrize(
    ("scheme", "variable"),
    [(scheme, name) for scheme, names in sorted(CREDENTIAL_ENV.items()) for name in names],
)
def test_a_credential_variable_admits_its_scheme_only(tmp_path, azure_account, scheme, variable):
    stores = StoreSettings.from_env(tmp_path, {variable: "set"})
    assert stores.credentials == {scheme}
    dest = parse(CLOUD[scheme], stores)
    assert (dest.scheme, dest.conf, dest.root) == (scheme, CLOUD[scheme], None)
    for other in set(CLOUD) - {scheme}:
        with pytest.raises(DestinationError):
            parse(CLOUD[other], stores)


@pytest.mark.parametrize("value", ["", "0", "true", "yes"])
def test_only_cloud_metadata_1_admits_every_scheme(tmp_path, azure_account, value):
    assert StoreSettings.from_env(tmp_path, {"AWS_ACCESS_KEY_ID": ""}).credentials == set()
    assert StoreSettings.from_env(tmp_path, {"EDGEPCAP_CLOUD_METADATA": value}).credentials == set()
    stores = StoreSettings.from_env(tmp_path, {"EDGEPCAP_CLOUD_METADATA": "1"})
    assert stores.credentials == set(CLOUD)
    assert [parse(CLOUD[s], stores).scheme for s in sorted(CLOUD)] == sorted(CLOUD)


def test_an_azure_bucket_the_server_cannot_name_an_account_for_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    stores = StoreSettings.from_env(tmp_path, {"AZURE_STORAGE_ACCOUNT_KEY": "k"})
    with pytest.raises(DestinationError):
        parse(CLOUD["az"], stores)


def test_cloud_buckets_are_kept_in_their_canonical_spelling(tmp_path):
    stores = StoreSettings.from_env(tmp_path, {"AWS_ACCESS_KEY_ID": "k"})
    dest = parse("S3://bucket//dir/sub/?region=eu-west-1", stores)
    assert dest.conf == "s3://bucket/dir/sub?region=eu-west-1"
    assert parse("s3://bucket/", stores).conf == "s3://bucket"


def test_an_s3_endpoint_has_its_one_region(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "k", "EDGEPCAP_S3_ENDPOINT": "http://127.0.0.1:9000"}
    stores = StoreSettings.from_env(tmp_path, {**env, "EDGEPCAP_S3_REGION": "eu-west-1"})
    assert (stores.s3_endpoint, stores.s3_region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert parse("s3://bucket/dir?region=eu-west-1", stores).scheme == "s3"
    assert parse("s3://bucket/dir", stores).scheme == "s3"
    with pytest.raises(DestinationError, match="one region, eu-west-1"):
        parse("s3://bucket/dir?region=us-east-1", stores)


def test_read_limits_default_and_parse(tmp_path):
    stores = StoreSettings.from_env(tmp_path, {})
    assert (stores.read_max_bytes, stores.read_max_objects) == (READ_MAX_BYTES, 64)
    stores = StoreSettings.from_env(
        tmp_path,
        {
            "EDGEPCAP_READ_MAX_BYTES": " 4096 ",
            "EDGEPCAP_READ_MAX_OBJECTS": "3",
            "EDGEPCAP_READS_PER_ACCOUNT": "1",
        },
    )
    assert (stores.read_max_bytes, stores.read_max_objects, stores.reads_per_account) == (
        4096,
        3,
        1,
    )


@pytest.mark.parametrize("value", ["ten", "0", "-5", "1.5", "16G", "0x10"])
def test_a_bad_read_limit_is_refused_by_name(tmp_path, value):
    with pytest.raises(ValueError, match="EDGEPCAP_READ_MAX_BYTES") as refused:
        StoreSettings.from_env(tmp_path, {"EDGEPCAP_READ_MAX_BYTES": value})
    assert repr(value) in str(refused.value)


def test_a_superscript_read_limit_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="EDGEPCAP_READ_MAX_BYTES"):
        StoreSettings.from_env(tmp_path, {"EDGEPCAP_READ_MAX_BYTES": "²"})
