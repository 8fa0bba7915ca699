import hashlib
import json

import pytest
import webdataset as wds
from PIL import Image

from memclip_train.convert.__main__ import main as convert_main
from memclip_train.data.sources import count_samples, expand_urls


def make_image(path, size=(40, 24), colour=(200, 30, 30), fmt="JPEG"):
    Image.new("RGB", size, colour).save(path, format=fmt)


@pytest.fixture
def sharegpt4v(tmp_path):
    """A ShareGPT4V-layout json of 1,008 entries over a few images, with one missing, one corrupt, one captionless."""
    root = tmp_path / "data"
    (root / "coco" / "train2017").mkdir(parents=True)
    (root / "sam" / "images").mkdir(parents=True)
    make_image(root / "coco" / "train2017" / "a.jpg")
    make_image(root / "sam" / "images" / "b.png", size=(300, 100), fmt="PNG")
    (root / "sam" / "images" / "broken.jpg").write_bytes(b"not an image at all")
    entries = []
    for index in range(1008):
        image = "coco/train2017/a.jpg" if index % 2 else "sam/images/b.png"
        caption = f"Entry {index} shows a red patch, e.g. a flag. It has more detail here."
        entries.append({"id": str(index), "image": image,
                        "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                          {"from": "gpt", "value": caption}]})
    entries[1001]["image"] = "coco/train2017/missing.jpg"
    entries[1002]["image"] = "sam/images/broken.jpg"
    entries[1003]["conversations"] = [{"from": "human", "value": "<image>"}]
    entries[5]["image"] = "coco/train2017/missing.jpg"
    path = tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json"
    path.write_text(json.dumps(entries))
    return path, root


def read_split(folder):
    names = sorted(p.name for p in folder.glob("*.tar"))
    urls = [str(folder / name) for name in names]
    return list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_sharegpt4v_conversion_holds_out_the_first_1000(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                         "--samples-per-shard", "300", "--max-side", "64", "--no-progress"]) == 0
    val, train = read_split(out / "val-1k"), read_split(out / "train")
    assert len(val) == 999 and len(train) == 5
    val_keys = {int(s["__key__"]) for s in val}
    assert val_keys == set(range(1000)) - {5}
    assert {int(s["__key__"]) for s in train} == {1000, 1004, 1005, 1006, 1007}
    sample = train[0]
    assert sample["txt"] == "Entry 1000 shows a red patch, e.g. a flag."
    assert sample["json"]["long"] == "Entry 1000 shows a red patch, e.g. a flag. It has more detail here."
    assert sample["json"]["source"] == json_path.name
    assert max(sample["jpg"].size) <= 64
    sizes = json.loads((out / "train" / "sizes.json").read_text())
    assert sum(sizes.values()) == 5
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["splits"]["train"]["skipped"] == {"corrupt": 1, "missing": 1, "no_caption": 1}
    assert summary["splits"]["val-1k"]["skipped"] == {"missing": 1}
    assert summary["entries"] == 1008


def test_resume_writes_only_missing_shards(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    args = ["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
            "--samples-per-shard", "250", "--no-progress"]
    convert_main(args)
    first = digest(out / "val-1k")
    kept = out / "val-1k" / "000000.tar"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "val-1k" / "000002.tar").unlink()
    (out / "val-1k" / "sizes.json").unlink()
    convert_main(args)
    assert digest(out / "val-1k") == first
    assert kept.stat().st_mtime_ns == kept_mtime, "a finished shard was rewritten"
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["splits"]["val-1k"]["shards_already_done"] == 3
    assert json.loads((out / "val-1k" / "sizes.json").read_text())["000002.tar"] == 250


@pytest.mark.slow
def test_parallel_workers_give_identical_shards(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    common = ["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--samples-per-shard", "400",
              "--no-progress"]
    convert_main(common + ["--out", str(tmp_path / "one")])
    convert_main(common + ["--out", str(tmp_path / "two"), "--workers", "2"])
    assert digest(tmp_path / "one" / "val-1k") == digest(tmp_path / "two" / "val-1k")


def test_jpeg_without_resize_passes_through(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                  "--val-size", "0", "--no-progress"])
    original = (root / "coco" / "train2017" / "a.jpg").read_bytes()
    samples = list(wds.WebDataset([str(p) for p in sorted((out / "train").glob("*.tar"))], shardshuffle=False))
    assert any(s["jpg"] == original for s in samples)
    assert not (out / "val-1k").exists()


def test_csv_conversion(tmp_path):
    make_image(tmp_path / "x.jpg")
    table = tmp_path / "pairs.csv"
    table.write_text('filepath,caption,long_caption\nx.jpg,a red patch,"A red patch. It is bright."\n'
                     'gone.jpg,missing,"Missing."\n')
    out = tmp_path / "out"
    convert_main(["csv", "--csv", str(table), "--image-root", str(tmp_path), "--out", str(out), "--no-progress"])
    samples = read_split(out / "train")
    assert len(samples) == 1 and samples[0]["txt"] == "a red patch"
    assert samples[0]["json"]["long"] == "A red patch. It is bright."
    only_long = tmp_path / "long.csv"
    only_long.write_text('filepath,long_caption\nx.jpg,"First. Second."\n')
    convert_main(["csv", "--csv", str(only_long), "--image-root", str(tmp_path), "--out", str(tmp_path / "o2"),
                  "--no-progress"])
    assert read_split(tmp_path / "o2" / "train")[0]["txt"] == "First."


def test_bad_inputs_are_reported(tmp_path, capsys):
    assert exit_code(["sharegpt4v", "--json", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    assert exit_code(["sharegpt4v", "--json", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "ShareGPT4V layout" in capsys.readouterr().err
    table = tmp_path / "t.csv"
    table.write_text("path,text\na.jpg,x\n")
    assert exit_code(["csv", "--csv", str(table), "--out", str(tmp_path / "o")]) == 2
    assert "missing columns ['filepath', 'caption']" in capsys.readouterr().err


def test_an_evaluation_sets_images_are_kept_out_of_train(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    sam10k = tmp_path / "share4v_sam_10k.json"
    sam10k.write_text(json.dumps([{"image": "./sam/images/b.png", "conversations": []}]))
    out = tmp_path / "shards"
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                         "--exclude-images", str(sam10k), "--no-progress"]) == 0
    assert {int(s["__key__"]) for s in read_split(out / "train")} == {1005, 1007}  # 1000, 1004, 1006: sam image
    assert len(read_split(out / "val-1k")) == 999  # the held-out split is not touched
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["excluded_from_train"]["entries"] == 3 and summary["excluded_from_train"]["images"] == 1
    listed = tmp_path / "images.txt"
    listed.write_text("coco/train2017/a.jpg\n")
    out = tmp_path / "shards2"
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                         "--exclude-images", str(listed), "--no-progress"]) == 0
    assert {int(s["__key__"]) for s in read_split(out / "train")} == {1000, 1004, 1006}
    assert expand_urls(str(out / "train")) == [str(out / "train" / "000000.tar")]  # the trainer reads the folder
    assert count_samples(expand_urls(str(out / "train"))) == 3
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--out", str(tmp_path / "shards3"),
                         "--exclude-images", str(tmp_path / "nowhere.json")]) == 2


def exit_code(argv):
    try:
        return convert_main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def test_images_outside_the_image_root_are_skipped_and_counted(tmp_path):
    root = tmp_path / "root"
    (root / "coco").mkdir(parents=True)
    make_image(root / "coco" / "inside.jpg")
    (tmp_path / "secret").mkdir()
    make_image(tmp_path / "secret" / "x.jpg", colour=(1, 2, 3))
    (root / "coco" / "link.jpg").symlink_to(tmp_path / "secret" / "x.jpg")
    images = ["coco/inside.jpg", "../secret/x.jpg", str(tmp_path / "secret" / "x.jpg"), "coco/link.jpg",
              str(root / "coco" / "inside.jpg")]
    entries = [{"image": image, "conversations": [{"from": "gpt", "value": f"Caption {i}."}]}
               for i, image in enumerate(images)]
    source = tmp_path / "share.json"
    source.write_text(json.dumps(entries))
    out = tmp_path / "out"
    assert convert_main(["sharegpt4v", "--json", str(source), "--image-root", str(root), "--out", str(out),
                         "--val-size", "0", "--no-progress"]) == 0
    assert sorted(int(s["__key__"]) for s in read_split(out / "train")) == [0, 4]
    assert json.loads((out / "conversion.json").read_text())["splits"]["train"]["skipped"] == {"outside_root": 3}

    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption\n" + "".join(f"{image},caption {i}\n" for i, image in enumerate(images)))
    assert convert_main(["csv", "--csv", str(table), "--image-root", str(root), "--out", str(tmp_path / "csv"),
                         "--no-progress"]) == 0
    summary = json.loads((tmp_path / "csv" / "conversion.json").read_text())
    assert summary["splits"]["train"]["samples_written"] == 2
    assert summary["splits"]["train"]["skipped"] == {"outside_root": 3}


def test_resumed_conversion_keeps_cumulative_counts(sharegpt4v, tmp_path):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    args = ["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
            "--samples-per-shard", "250", "--no-progress"]
    assert convert_main(args) == 0
    first = json.loads((out / "conversion.json").read_text())
    (out / "val-1k" / "000002.tar").unlink()
    assert convert_main(args) == 0
    summary = json.loads((out / "conversion.json").read_text())
    for split in ("train", "val-1k"):
        for key in ("samples_written", "skipped", "shards"):
            assert summary["splits"][split][key] == first["splits"][split][key], (split, key)
    assert summary["splits"]["train"]["skipped"] == {"corrupt": 1, "missing": 1, "no_caption": 1}
    assert summary["splits"]["val-1k"]["samples_written"] == 999


@pytest.mark.parametrize("change,named", [(["--samples-per-shard", "300"], "--samples-per-shard 300 (the shards "
                                                                           "there were written with 250)"),
                                          (["--val-size", "500"], "--val-size 500 (the shards there were written "
                                                                  "with 1000)")])
def test_resume_with_another_shard_layout_is_refused(sharegpt4v, tmp_path, capsys, change, named):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    args = ["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
            "--samples-per-shard", "250", "--no-progress"]
    assert convert_main(args) == 0
    (out / "val-1k" / "000003.tar").unlink()
    before = digest(out / "val-1k")
    assert exit_code(args + change) == 2
    assert named in capsys.readouterr().err
    assert digest(out / "val-1k") == before and not (out / "val-1k" / "000003.tar").exists()


def test_a_malformed_table_is_named_with_its_line(tmp_path, capsys):
    make_image(tmp_path / "x.jpg")
    table = tmp_path / "broken.csv"
    table.write_text('filepath,caption\nx.jpg,fine\nx.jpg,too,many,fields\n')
    assert exit_code(["csv", "--csv", str(table), "--image-root", str(tmp_path), "--out", str(tmp_path / "o"),
                      "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and str(table) in lines[0] and "line 3" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("name", ["train", "../elsewhere", "", ".", "a/b"])
def test_a_val_name_that_is_not_a_folder_of_its_own_is_refused(sharegpt4v, tmp_path, capsys, name):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    assert exit_code(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                      "--val-name", name, "--no-progress"]) == 2
    assert f"--val-name {name if name == 'train' else repr(name)}" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_source_and_a_split_whose_every_entry_is_skipped_are_errors(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert exit_code(["sharegpt4v", "--json", str(empty), "--out", str(tmp_path / "o1")]) == 2
    assert "holds no entries" in capsys.readouterr().err
    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption\ngone.jpg,a\nlost.jpg,b\n")
    assert exit_code(["csv", "--csv", str(table), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train: every one of its 2 entries was skipped ({'missing': 2})" in err


def test_wrong_typed_sharegpt4v_fields_are_named_and_null_captions_skipped(tmp_path, capsys):
    make_image(tmp_path / "a.jpg")
    entries = [{"image": "a.jpg", "conversations": [{"from": "gpt", "value": "A red patch. Bright."}]},
               {"image": "a.jpg", "conversations": [{"from": "gpt", "value": None}]}]
    source = tmp_path / "share.json"
    source.write_text(json.dumps(entries))
    assert convert_main(["sharegpt4v", "--json", str(source), "--out", str(tmp_path / "ok"), "--val-size", "0",
                         "--no-progress"]) == 0
    summary = json.loads((tmp_path / "ok" / "conversion.json").read_text())
    assert summary["splits"]["train"]["samples_written"] == 1
    assert summary["splits"]["train"]["skipped"] == {"no_caption": 1}
    for spoil, named in [({"value": 12}, "entry 1: the gpt turn's value is a int, not text"),
                         ({"value": ["a", "b"]}, "entry 1: the gpt turn's value is a list, not text")]:
        entries[1]["conversations"] = [{"from": "gpt", **spoil}]
        source.write_text(json.dumps(entries))
        assert exit_code(["sharegpt4v", "--json", str(source), "--out", str(tmp_path / "bad"), "--val-size", "0",
                          "--no-progress"]) == 2
        assert named in capsys.readouterr().err
    entries[1] = {"image": 7, "conversations": []}
    source.write_text(json.dumps(entries))
    assert exit_code(["sharegpt4v", "--json", str(source), "--out", str(tmp_path / "bad"), "--val-size", "0"]) == 2
    assert "entry 1: 'image' is a int, not a path" in capsys.readouterr().err


def test_a_missing_long_caption_is_not_stood_in_for_but_counted(tmp_path):
    make_image(tmp_path / "x.jpg")
    table = tmp_path / "pairs.csv"
    table.write_text('filepath,caption,long_caption\nx.jpg,a red patch,"A red patch. Bright."\nx.jpg,a blue one,\n')
    out = tmp_path / "out"
    assert convert_main(["csv", "--csv", str(table), "--image-root", str(tmp_path), "--out", str(out),
                         "--no-progress"]) == 0
    samples = read_split(out / "train")
    assert samples[0]["json"]["long"] == "A red patch. Bright."
    assert "long" not in samples[1]["json"] and samples[1]["txt"] == "a blue one"
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["splits"]["train"]["lacking"] == {"long_caption": 1}


def test_train_entries_sharing_a_held_out_image_are_counted(sharegpt4v, tmp_path, caplog):
    json_path, root = sharegpt4v
    out = tmp_path / "shards"
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root), "--out", str(out),
                         "--no-progress"]) == 0
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["train_entries_sharing_a_held_out_image"] == 7  # 1001 names a missing image
    assert "7 train entries show an image that a held-out (val-1k) entry shows too" in caplog.text


def test_count_only_gives_the_split_sizes_without_reading_images(sharegpt4v, tmp_path, capsys):
    json_path, root = sharegpt4v
    sam10k = tmp_path / "share4v_sam_10k.json"
    # an evaluation json naming the SAM image from another folder layout (FLAIR's sa_000000/images/...)
    entries = [{"image": "sa_000000/images/sa_7.jpg"}, {"image": "coco/train2017/elsewhere.jpg"}]
    sam10k.write_text(json.dumps(entries))
    data = json.loads(json_path.read_text())
    for index in (1000, 1004, 1006):
        data[index]["image"] = "sam/images/sa_7.jpg"
    json_path.write_text(json.dumps(data))
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--exclude-images", str(sam10k),
                         "--count-only"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["entries"] == 1008 and counts["val-1k"] == 1000
    assert counts["excluded_from_train"] == 3 and counts["train"] == 5, "SA-1B images match by file name"
    assert not (tmp_path / "shards").exists()
    assert convert_main(["sharegpt4v", "--json", str(json_path), "--image-root", str(root)]) == 2
    assert "--out is required" in capsys.readouterr().err
