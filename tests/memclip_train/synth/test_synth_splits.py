"""Every split reads back: webdataset for the shards, PIL for images and masks, json for the index files."""
import io
import json

import numpy as np
import webdataset as wds
from PIL import Image

from memclip_train.synth import PATTERNS, SPLITS, WorldConfig, render_scene
from memclip_train.synth.splits import scene_for
from synth_helpers import tiny_config

CONFIG = tiny_config()


def test_world_json_records_arguments_vocabularies_and_counts(tiny_world):
    world = json.loads((tiny_world / "world.json").read_text())
    assert world["version"] == 2 and world["seed"] == 0
    assert world["arguments"]["train"] == 40 and world["arguments"]["render"]["image_size"] == 64
    vocab = world["vocabularies"]
    assert len(vocab["shapes"]) >= 8 and {"circle", "square", "triangle", "star", "cross", "diamond", "heart",
                                          "ring"} <= set(vocab["shapes"])
    assert len(vocab["colours"]) >= 8 and set(vocab["sizes"]) == {"small", "medium", "large"}
    assert set(vocab["fills"]) == {"solid", "striped", "outline"} and len(vocab["positions"]) == 9
    assert set(vocab["orientations"]) == {"up", "down", "left", "right"}
    assert set(world["splits"]) == set(SPLITS)
    assert world["splits"]["train"] == {"samples": 40, "shards": 3}
    assert world["splits"]["pairs"]["pairs"] == 2 * len(PATTERNS)


def test_shards_read_back_through_webdataset(tiny_world):
    for split, expected in (("train", 40), ("val", 8)):
        sizes = json.loads((tiny_world / split / "sizes.json").read_text())
        assert sum(sizes.values()) == expected
        shards = sorted(sizes)
        assert shards[0] == "000000.tar" and all(sizes[s] == 16 for s in shards[:-1])
        assert not list((tiny_world / split).glob(".*"))            # no temporary files left behind
        url = str(tiny_world / split / f"{{000000..{len(shards) - 1:06d}}}.tar")
        dataset = wds.WebDataset(url, shardshuffle=False, empty_check=False).decode("pil")
        keys = []
        for sample in dataset:
            keys.append(sample["__key__"])
            image, record = sample["jpg"], sample["json"]
            assert image.size == (64, 64) and image.mode == "RGB"
            assert sample["txt"] == record["short"]
            assert record["long"] and len(record["long"]) > len(record["short"])
            assert 1 <= len(record["objects"]) <= 6
            for obj in record["objects"]:
                assert set(obj) >= {"shape", "colour", "size", "position", "orientation", "fill", "bbox"}
                x0, y0, x1, y1 = obj["bbox"]
                assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert keys == [f"{i:09d}" for i in range(expected)]


def test_retrieval_split_reads_back(tiny_world):
    folder = tiny_world / "retrieval"
    for n in range(12):
        with Image.open(folder / "image" / f"{n}.jpg") as image:
            assert image.size == (64, 64)
        lines = (folder / "caption" / f"{n}.txt").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and lines[0].count(".") >= 2
    coco = json.loads((folder / "captions_short.json").read_text())
    assert [image["id"] for image in coco["images"]] == list(range(12))
    for image in coco["images"]:
        assert (folder / image["file_name"]).is_file()
    per_image = {}
    for annotation in coco["annotations"]:
        per_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert all(len(captions) == 5 and len(set(captions)) == 5 for captions in per_image.values())
    assert set(per_image) == set(range(12))


def test_segmentation_split_reads_back_and_matches_the_scenes(tiny_world):
    folder = tiny_world / "segmentation"
    world = WorldConfig()
    classes = (folder / "classes.txt").read_text().splitlines()
    assert classes == list(world.shapes)
    ids = (folder / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert ids == [f"{i:06d}" for i in range(8)]
    for index, image_id in enumerate(ids):
        with Image.open(folder / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == (64, 64)
        with Image.open(folder / "SegmentationClass" / f"{image_id}.png") as mask:
            assert mask.mode == "P" and mask.size == (64, 64)
            assert tuple(mask.getpalette()[3:6]) == (128, 0, 0)      # VOC colour map
            labels = np.asarray(mask)
        assert set(np.unique(labels).tolist()) <= set(range(len(classes) + 1)) | {255}
        scene = scene_for(CONFIG, "segmentation", index)
        expected = render_scene(scene, world, CONFIG.render).class_mask(scene, world)
        assert np.array_equal(labels, expected)
        present = {classes[v - 1] for v in np.unique(labels) if 0 < v < 255}
        assert present == {o.shape for o in scene.objects}


def test_images_match_their_scenes(tiny_world):
    """The JPEG on disk is the rendering of the recorded scene (up to JPEG loss)."""
    dataset = wds.WebDataset(str(tiny_world / "val" / "000000.tar"), shardshuffle=False, empty_check=False)
    for sample in dataset:
        index = int(sample["__key__"])
        scene = scene_for(CONFIG, "val", index)
        record = json.loads(sample["json"])
        assert [o["shape"] for o in record["objects"]] == [o.shape for o in scene.objects]
        decoded = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"), dtype=np.float64)
        rendered = render_scene(scene, WorldConfig(), CONFIG.render).image.astype(np.float64)
        assert np.abs(decoded - rendered).mean() < 4
