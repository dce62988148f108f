"""Bucket ownership over HTTP: `file://` buckets and a real S3-protocol server (moto)."""

from __future__ import annotations

import boto3
import pytest

from tests.support.api import error_of, full


def s3_client(stack):
    return boto3.client(
        "s3",
        endpoint_url=stack.environ["EDGEPCAP_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_file_bucket_challenge_validate_list_delete(stack):
    acct = stack.account()
    directory = stack.server.data_dir / "buckets" / f"own-{acct.id}"
    directory.mkdir(parents=True)
    conf = f"file://{directory}/"
    with stack.client(acct) as c:
        r = c.post("/pcaps/ownership", json={"destination_conf": conf})
        assert r.status_code == 200, r.text
        bucket = r.json()["result"]
        assert bucket["status"] == "pending" and bucket["validated"] is None
        assert bucket["destination_conf"] == conf.rstrip("/")  # its canonical form
        assert bucket["filename"].startswith("ownership-challenge-")
        assert bucket["filename"].endswith(".txt")
        token = (directory / bucket["filename"]).read_text()
        assert len(token) >= 32

        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": conf, "ownership_challenge": "wrong"},
        )
        assert r.status_code == 400
        code, message = error_of(r)
        assert code == 1303 and bucket["filename"] in message
        assert c.get("/pcaps/ownership").json()["result"][0]["status"] == "failed"

        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": conf, "ownership_challenge": token},
        )
        assert r.status_code == 200, r.text
        validated = r.json()["result"]
        assert validated["status"] == "success" and validated["validated"]
        assert validated["id"] == bucket["id"]

        listed = c.get("/pcaps/ownership").json()["result"]
        assert [b["id"] for b in listed] == [bucket["id"]]

        r = c.delete(f"/pcaps/ownership/{bucket['id']}")
        assert r.status_code == 200 and r.json()["success"] is True
        assert c.get("/pcaps/ownership").json()["result"] == []
        r = c.delete(f"/pcaps/ownership/{bucket['id']}")
        assert r.status_code == 404


def test_a_new_challenge_replaces_the_old_one(stack):
    acct = stack.account()
    directory = stack.server.data_dir / "buckets" / f"again-{acct.id}"
    directory.mkdir(parents=True)
    conf = f"file://{directory}"
    with stack.client(acct) as c:
        first = c.post("/pcaps/ownership", json={"destination_conf": conf}).json()["result"]
        old = (directory / first["filename"]).read_text()
        second = c.post("/pcaps/ownership", json={"destination_conf": conf}).json()["result"]
        assert second["id"] == first["id"] and second["filename"] != first["filename"]
        assert not (directory / first["filename"]).exists()
        r = c.post(
            "/pcaps/ownership/validate", json={"destination_conf": conf, "ownership_challenge": old}
        )
        assert r.status_code == 400


def test_s3_bucket_through_a_real_s3_server(stack):
    acct = stack.account()
    s3 = s3_client(stack)
    name = f"pcaps-{acct.id[:12]}"
    s3.create_bucket(Bucket=name)
    conf = f"s3://{name}/captures?region=us-east-1"
    with stack.client(acct, keys=True) as c:
        r = c.post("/pcaps/ownership", json={"destination_conf": conf})
        assert r.status_code == 200, r.text
        bucket = r.json()["result"]
        obj = s3.get_object(Bucket=name, Key=f"captures/{bucket['filename']}")
        token = obj["Body"].read().decode()
        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": conf, "ownership_challenge": token},
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"]["status"] == "success"

        r = c.post(
            "/pcaps",
            json=full(conf, time_limit=5, colo_name="ORD"),
        )
        assert r.status_code == 200, r.text


def test_a_bucket_not_proven_gives_no_hint_whether_it_exists(stack):
    acct, victim = stack.account(), stack.account()
    root = stack.server.data_dir / "buckets"
    theirs = root / victim.id
    stack.validated_bucket(victim)
    before = sorted(p.name for p in theirs.iterdir())
    (root / f"link-{acct.id}").symlink_to(theirs)
    (root / f"file-{acct.id}").write_text("not a directory")
    confs = [
        f"file://{root}/missing-{acct.id}",
        f"file://{root}/link-{acct.id}",
        f"file://{root}/file-{acct.id}",
        "s3://no-such-bucket-here/x",
    ]
    messages = set()
    with stack.client(acct) as c:
        for conf in confs:
            r = c.post("/pcaps/ownership", json={"destination_conf": conf})
            assert r.status_code == 400, r.text
            code, message = error_of(r)
            assert code == 1302 and f"could not write an ownership challenge into {conf}" in message
            messages.add(message.replace(conf, "<bucket>"))
        assert c.get("/pcaps/ownership").json()["result"] == []
    assert len(messages) == 1, messages
    # Nothing was written through the link into the other account's bucket.
    assert sorted(p.name for p in theirs.iterdir()) == before


def test_spellings_of_one_bucket_are_one_bucket(stack):
    acct = stack.account()
    directory = stack.server.data_dir / "buckets" / f"alias-{acct.id}"
    directory.mkdir(parents=True)
    canonical = f"file://{directory}"
    spellings = [
        f"file://{directory}/",
        "file://" + str(directory).replace("/", "//") + "//",
        f"FILE://{directory}",
    ]
    with stack.client(acct) as c:
        added = []
        for conf in spellings:
            r = c.post("/pcaps/ownership", json={"destination_conf": conf})
            assert r.status_code == 200, r.text
            added.append(r.json()["result"])
        assert {b["id"] for b in added} == {added[0]["id"]}
        assert {b["destination_conf"] for b in added} == {canonical}
        # Each new challenge replaced the last: one file in the bucket, not one per spelling.
        files = [p for p in directory.iterdir() if p.name.startswith("ownership-challenge-")]
        assert [p.name for p in files] == [added[-1]["filename"]]
        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": spellings[1], "ownership_challenge": files[0].read_text()},
        )
        assert r.status_code == 200, r.text
        assert [b["status"] for b in c.get("/pcaps/ownership").json()["result"]] == ["success"]
        r = c.post("/pcaps", json=full(spellings[0], time_limit=5, colo_name="ORD"))
        assert r.status_code == 200, r.text
        assert r.json()["result"]["destination_conf"] == canonical
        assert c.put(f"/pcaps/{r.json()['result']['id']}/stop").status_code == 200


@pytest.mark.parametrize(
    ("conf", "needle"),
    [
        ("file:///etc", "bucket root"),
        ("file:///tmp/../etc", "not allowed"),
        ("file://host/dir", "file:///absolute/dir"),
        ("file:relative", "absolute"),
        ("http://example.com/bucket", "not supported"),
        ("ftp://bucket/x", "not supported"),
        ("nonsense", "not supported"),
        ("s3://bucket/x?endpoint=http://127.0.0.1:1", "only region"),
        ("s3://user:secret@bucket/x", "credentials"),
        ("s3://bucket:9000/x", "ports"),
        ("s3://bucket:abc/", "'bucket:abc' names a port"),
        ("s3://bucket/x?region=a1&region=b2", "twice"),
        ("s3://bucket/x?region", "do not parse"),
        ("s3://bucket/x?region=zz-west-9", "has one region"),
        ("s3://Bad_Bucket!/x", "not a valid bucket name"),
        ("s3://bucket/a/../b", "not allowed"),
        ("gs://bucket/x?foo=bar", "no parameters"),
        ("gs://bucket/x", "no credentials for gs://"),
        ("az://container/x", "no credentials for az://"),
        ("", "destination_conf"),
    ],
)
def test_destinations_outside_policy_are_refused(stack, conf, needle):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post("/pcaps/ownership", json={"destination_conf": conf})
        assert r.status_code == 400, r.text
        code, message = error_of(r)
        assert code in (1300, 1302) and needle in message, message


def test_validate_unknown_bucket_is_404(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": "file:///nowhere", "ownership_challenge": "x"},
        )
        assert r.status_code == 404 and "POST /pcaps/ownership" in error_of(r)[1]


def test_a_challenge_file_made_a_link_is_not_read(stack):
    acct, victim = stack.account(), stack.account()
    root = stack.server.data_dir / "buckets"
    stack.validated_bucket(victim)
    secret = root / victim.id / "big.bin"
    secret.write_bytes(b"s" * (2 << 20))
    directory = root / f"linked-challenge-{acct.id}"
    directory.mkdir()
    conf = f"file://{directory}"
    with stack.client(acct) as c:
        filename = c.post("/pcaps/ownership", json={"destination_conf": conf}).json()["result"][
            "filename"
        ]
        (directory / filename).unlink()
        (directory / filename).symlink_to(secret)
        r = c.post(
            "/pcaps/ownership/validate",
            json={"destination_conf": conf, "ownership_challenge": "s" * 64},
        )
    assert r.status_code == 400, r.text
    code, message = error_of(r)
    # Not read through the link, and nothing said of its target (its size was, before).
    assert code == 1302 and f"could not read the ownership challenge {filename}" in message, message
    assert "larger" not in message and "symbolic" not in message


def test_the_bucket_root_itself_is_no_bucket(stack):
    # It holds every account's bucket directories: proving it would reach all of them.
    acct = stack.account()
    root = stack.server.data_dir / "buckets"
    with stack.client(acct) as c:
        for conf in (f"file://{root}", f"file://{root}/"):
            r = c.post("/pcaps/ownership", json={"destination_conf": conf})
            assert r.status_code == 400, r.text
            assert "below this server's bucket root" in error_of(r)[1]
