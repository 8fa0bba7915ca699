"""memclip.atomic_io: whole files or none, the old file kept when a write fails, strays findable."""
import json
import os
import stat

import pytest

from memclip.atomic_io import (AtomicFile, atomic_write, atomic_write_json, atomic_write_text, stray_temporaries,
                               stray_temporaries_in)


def test_json_and_text_land_whole_in_new_folders(tmp_path):
    path = tmp_path / "a" / "b" / "result.json"
    atomic_write_json(path, {"name": "café", "n": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{\n  "name": "café",\n  "n": [\n    1,\n    2\n  ]\n}\n'
    atomic_write_json(path, [1], indent=None)
    assert json.loads(path.read_text()) == [1]
    atomic_write_text(tmp_path / "t.txt", "line\n")
    assert (tmp_path / "t.txt").read_text() == "line\n"
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_a_failing_writer_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def fail(temporary):
        with open(temporary, "wb") as file:
            file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and stray_temporaries(path) == []
    atomic_write(path, lambda temporary: open(temporary, "wb").close())
    assert path.read_bytes() == b""


def test_a_streamed_file_appears_only_on_commit(tmp_path):
    path = tmp_path / "000000.tar"
    streamed = AtomicFile(path, fsync=False)
    streamed.file.write(b"part")
    assert not path.exists() and stray_temporaries(path) == [streamed.temporary]
    streamed.commit()
    assert path.read_bytes() == b"part" and stray_temporaries(path) == []
    with pytest.raises(ValueError):
        with AtomicFile(path) as file:
            file.write(b"other")
            raise ValueError("stop")
    assert path.read_bytes() == b"part" and stray_temporaries(path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "text.txt", "x")
        atomic_write(tmp_path / "model.pt", lambda temporary: open(temporary, "wb").close())
        with AtomicFile(tmp_path / "000000.tar", fsync=False) as file:
            file.write(b"tar")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("text.txt", "model.pt", "000000.tar"):
        assert oct(stat.S_IMODE((tmp_path / name).stat().st_mode)) == oct(expected), name


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "sizes.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write_json(path, {"000000.tar": 3})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and json.loads(path.read_text()) == {"000000.tar": 3}


def test_strays_in_a_folder_are_found(tmp_path):
    (tmp_path / ".epoch_latest.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "epoch_1.pt").write_bytes(b"whole")
    assert stray_temporaries_in(tmp_path) == [tmp_path / ".epoch_latest.pt.abc123.tmp"]
