"""The deterministic webdataset shard writer."""
import json
import tarfile

import pytest
import webdataset as wds

from memclip_train.data.shard_writer import ShardWriter


def write(folder, count=5, per_shard=2, **kwargs):
    with ShardWriter(folder, samples_per_shard=per_shard, **kwargs) as writer:
        for i in range(count):
            writer.write(f"{i:04d}", {"txt": f"caption {i}", "json": {"i": i, "word": "é"}, "jpg": bytes([i]) * 10})
    return writer


def test_shards_sizes_and_member_metadata(tmp_path):
    writer = write(tmp_path, count=5, per_shard=2)
    assert writer.sizes == {"000000.tar": 2, "000001.tar": 2, "000002.tar": 1}
    assert json.loads((tmp_path / "sizes.json").read_text()) == writer.sizes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000.tar", "000001.tar", "000002.tar", "sizes.json"]
    with tarfile.open(tmp_path / "000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["0000.jpg", "0000.json", "0000.txt", "0001.jpg", "0001.json", "0001.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
    samples = list(wds.WebDataset(str(tmp_path / "{000000..000002}.tar"), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == ["0000", "0001", "0002", "0003", "0004"]
    assert samples[3]["txt"] == b"caption 3" and json.loads(samples[3]["json"]) == {"i": 3, "word": "é"}


def test_same_samples_give_identical_bytes(tmp_path):
    write(tmp_path / "a")
    write(tmp_path / "b")
    for name in ("000000.tar", "000001.tar", "000002.tar", "sizes.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_field_order_does_not_matter(tmp_path):
    for folder, fields in (("a", {"txt": "x", "jpg": b"y"}), ("b", {"jpg": b"y", "txt": "x"})):
        with ShardWriter(tmp_path / folder) as writer:
            writer.write("k", fields)
    assert (tmp_path / "a" / "000000.tar").read_bytes() == (tmp_path / "b" / "000000.tar").read_bytes()


def test_failure_leaves_finished_shards_and_no_partial_one(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, samples_per_shard=2) as writer:
            for i in range(3):
                writer.write(f"{i}", {"txt": "x"})
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000.tar"]


def test_bad_keys_and_fields_are_refused(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write("a", {"txt": "x"})
        with pytest.raises(ValueError, match="repeated"):
            writer.write("a", {"txt": "y"})
        with pytest.raises(ValueError, match="without"):
            writer.write("b.c", {"txt": "y"})
        with pytest.raises(ValueError, match="no fields"):
            writer.write("d", {})
        with pytest.raises(TypeError, match="float"):
            writer.write("e", {"txt": 1.5})
    with pytest.raises(ValueError, match="samples_per_shard"):
        ShardWriter(tmp_path, samples_per_shard=0)
    with pytest.raises(RuntimeError, match="closed"):
        writer.write("z", {"txt": "x"})
