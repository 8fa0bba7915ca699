"""The command line: writes a world and a preview, refuses a non-empty folder and bad arguments."""
import json

import pytest
from PIL import Image

from memclip_train.synth.__main__ import main
from memclip_train.synth.writers import RetrievalSplitWriter

TINY = ["--train", "20", "--val", "4", "--retrieval", "6", "--segmentation", "4", "--pairs-per-pattern", "1",
        "--samples-per-shard", "8", "--no-progress"]


def run(capsys, *argv):
    """The exit code (returned, or raised while parsing the flags) and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def test_cli_writes_all_splits_and_a_preview(tmp_path):
    out = tmp_path / "world"
    main(["--out", str(out), "--seed", "3", "--workers", "2", "--preview", *TINY])
    assert {p.name for p in out.iterdir()} == {"world.json", "train", "val", "retrieval", "segmentation", "pairs",
                                               "preview.png"}
    world = json.loads((out / "world.json").read_text())
    assert world["seed"] == 3 and world["splits"]["train"] == {"samples": 20, "shards": 3}
    with Image.open(out / "preview.png") as preview:
        assert preview.format == "PNG" and preview.width == 1280 and preview.height > 600


def test_cli_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "world"
    main(["--out", str(out), "--seed", "1", *TINY])
    (out / "notes.txt").write_text("mine")
    (out / "train" / "mine.txt").write_text("also mine")
    code, err = run(capsys, "--out", str(out), *TINY)
    assert code == 2 and "not empty" in err and "--overwrite" in err

    main(["--out", str(out), "--overwrite", "--seed", "2", "--train", "5", *TINY[2:]])
    assert json.loads((out / "world.json").read_text())["seed"] == 2
    assert json.loads((out / "train" / "sizes.json").read_text()) == {"000000.tar": 5}
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.tar", "mine.txt", "sizes.json"]
    assert (out / "notes.txt").read_text() == "mine"          # --overwrite removes only what it wrote
    assert (out / "train" / "mine.txt").read_text() == "also mine"


def test_overwrite_refuses_a_folder_the_generator_did_not_write(tmp_path, capsys):
    out = tmp_path / "converted"
    (out / "train").mkdir(parents=True)
    for index in range(3):
        (out / "train" / f"{index:06d}.tar").write_bytes(b"real shards of a converter")
    (out / "conversion.json").write_text("{}")
    code, err = run(capsys, "--out", str(out), "--overwrite", *TINY)
    assert code == 2 and "world.json" in err and "--overwrite only replaces a generated world" in err
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.tar", "000001.tar", "000002.tar"]


@pytest.mark.parametrize("world_json,named", [('{"files": "train/000000.tar"}', "'files' is not a list of paths"),
                                              ('{"files": [1, 2]}', "'files' is not a list of paths"),
                                              ('{"files": ["a"], "folders": "train"}', "'folders' is not a list"),
                                              ('{"files": [', "is not readable json")])
def test_overwrite_refuses_a_world_json_it_cannot_trust(tmp_path, capsys, world_json, named):
    out = tmp_path / "world"
    (out / "train").mkdir(parents=True)
    (out / "t").write_text("a file whose name is one letter of 'train/000000.tar'")
    (out / "world.json").write_text(world_json)
    code, err = run(capsys, "--out", str(out), "--overwrite", *TINY)
    assert code == 2 and named in err and str(out / "world.json") in err
    assert (out / "t").exists() and (out / "train").is_dir()


def test_overwrite_replaces_an_interrupted_generation(tmp_path, monkeypatch):
    out = tmp_path / "world"

    def interrupted(self, item):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(RetrievalSplitWriter, "add", interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(["--out", str(out), *TINY])
    assert not (out / "world.json").exists() and (out / "train" / "000000.tar").exists()
    (out / "notes.txt").write_text("mine")
    main(["--out", str(out), "--overwrite", *TINY])
    assert json.loads((out / "world.json").read_text())["splits"]["retrieval"]["images"] == 6
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "pairs", "retrieval", "segmentation", "train",
                                                     "val", "world.json"]


def test_overwrite_refuses_a_world_json_listing_paths_outside_the_folder(tmp_path, capsys):
    out = tmp_path / "world"
    main(["--out", str(out), *TINY])
    world = json.loads((out / "world.json").read_text())
    world["files"].append("../precious.txt")
    (out / "world.json").write_text(json.dumps(world))
    (tmp_path / "precious.txt").write_text("keep")
    code, err = run(capsys, "--out", str(out), "--overwrite", *TINY)
    assert code == 2 and "precious.txt" in err and "not inside" in err
    assert (tmp_path / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("argv,message", [
    (["--train", "-1"], "negative"),
    (["--train", "many"], "not an integer"),
    (["--workers", "0"], "at least 1"),
    (["--image-size", "16"], "image_size"),
    (["--max-objects", "12"], "max_objects"),
    (["--min-objects", "5", "--max-objects", "3"], "min_objects"),
    (["--jpeg-quality", "101"], "jpeg_quality"),
    (["--samples-per-shard", "0"], "at least 1"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    code, err = run(capsys, "--out", str(tmp_path / "w"), *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "w").exists()


def test_cli_needs_out(capsys):
    code, err = run(capsys, "--train", "1")
    assert code == 2 and "--out" in err
