"""`file://` bucket files below the root: no link followed, only regular files read."""

from __future__ import annotations

import os
import stat

import pytest

from edgepcap import beneath


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "bucket").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "root"


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_objects_and_their_folders_get_the_buckets_modes_whatever_the_umask(root):
    old = os.umask(0o077)
    try:
        beneath.put(root, "bucket", "ord01/pcap_x.pcap", b"data")
    finally:
        os.umask(old)
    assert mode(root / "bucket" / "ord01") == beneath.DIR_MODE
    assert mode(root / "bucket" / "ord01" / "pcap_x.pcap") == beneath.FILE_MODE
    assert beneath.read_file(root, "bucket", "ord01/pcap_x.pcap", 100) == b"data"
    assert os.listdir(root / "bucket" / "ord01") == ["pcap_x.pcap"]  # no staging file left


@pytest.mark.parametrize("where", ["bucket folder", "machine folder", "object"])
def test_a_link_at_any_component_is_neither_written_nor_read_through(root, where):
    target = root.parent / "elsewhere"
    (target / "pcap_x.pcap").write_bytes(b"secret")
    bucket = root / "bucket"
    if where == "bucket folder":
        bucket.rmdir()
        bucket.symlink_to(target)
    elif where == "machine folder":
        (bucket / "ord01").symlink_to(target)
    else:
        (bucket / "ord01").mkdir()
        (bucket / "ord01" / "pcap_x.pcap").symlink_to(target / "pcap_x.pcap")
    name = "pcap_x.pcap" if where == "bucket folder" else "ord01/pcap_x.pcap"
    with pytest.raises(OSError, match="is a symbolic link"):
        beneath.read_file(root, "bucket", name, 100)
    if where == "object":
        # Written beside it and renamed over the name: the link itself is replaced.
        beneath.put(root, "bucket", name, b"overwrite")
        assert not (bucket / name).is_symlink()
        assert (bucket / name).read_bytes() == b"overwrite"
    else:
        with pytest.raises(OSError, match="is a symbolic link"):
            beneath.put(root, "bucket", name, b"overwrite")
    assert sorted(os.listdir(target)) == ["pcap_x.pcap"]
    assert (target / "pcap_x.pcap").read_bytes() == b"secret"


def test_only_regular_files_are_read_and_plain_relative_names_taken(root):
    os.mkfifo(root / "bucket" / "fifo.pcap")
    with pytest.raises(OSError, match="is not a regular file"):
        beneath.read_file(root, "bucket", "fifo.pcap", 100)  # and does not hang
    for name in ("../bucket/x.pcap", "ord01/../../x.pcap", "./x.pcap"):
        with pytest.raises(OSError, match="is not a plain relative path"):
            beneath.put(root, "bucket", name, b"x")


def test_a_read_stops_at_the_size_the_file_had_when_opened(root):
    beneath.put(root, "bucket", "ord01/pcap_x.pcap", b"a" * 10)
    found = beneath.open_file(root, "bucket", "ord01/pcap_x.pcap")
    with open(root / "bucket" / "ord01" / "pcap_x.pcap", "ab") as grow:
        grow.write(b"b" * 10)
    assert b"".join(found.chunks(4)) == b"a" * 10


def test_a_folder_moved_away_during_a_write_fails_it(root):
    writer = beneath.Writer(root, "bucket", "ord01/pcap_x.pcap")
    writer.write(b"packets")
    (root / "bucket" / "ord01").rename(root / "bucket" / "moved")
    with pytest.raises(OSError, match="'bucket/ord01' was moved or replaced during the write"):
        writer.close()
    assert os.listdir(root / "bucket" / "moved") == []  # staging file removed, nothing done
