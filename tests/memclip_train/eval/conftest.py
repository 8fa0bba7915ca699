"""Tiny fixtures written in each benchmark's real layout, and a micro model loaded once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval_files import image

from memclip_train.eval.models import ModelRef, load_model

@pytest.fixture(scope="session")
def micro_model(micro_configs):
    torch.manual_seed(0)
    return load_model(ModelRef("Test-Micro-mem"), torch.device("cpu"))


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    images = []
    for i in range(4):
        image(root / "val2014" / f"COCO_val2014_{i:012d}.jpg", i)
        images.append({"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg",
                       "split": "test" if i < 3 else "train",
                       "sentences": [{"raw": f"picture {i} caption {j}"} for j in range(5)]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "000000000007.jpg"}, {"id": 9, "file_name": "000000000009.jpg"}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "a red thing"}, {"id": 2, "image_id": 9, "caption": "b"},
                        {"id": 3, "image_id": 7, "caption": "another red thing"}]}))
    image(root / "val2017" / "000000000007.jpg", 0)
    image(root / "val2017" / "000000000009.jpg", 1)
    return root


@pytest.fixture
def flickr_root(tmp_path):
    root = tmp_path / "flickr"
    images = []
    for i in range(3):
        image(root / "flickr30k-images" / f"{1000 + i}.jpg", i)
        images.append({"filename": f"{1000 + i}.jpg", "split": "test" if i else "train",
                       "sentences": [{"raw": f"flickr {i} {j}"} for j in range(5)]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return root


@pytest.fixture
def urban_root(tmp_path):
    root = tmp_path / "Urban1k"
    for i in range(1, 4):
        image(root / "image" / f"{i}.jpg", i)
        (root / "caption").mkdir(parents=True, exist_ok=True)
        (root / "caption" / f"{i}.txt").write_text(f"Urban scene {i} with many details.\nsecond line ignored\n")
    return root


@pytest.fixture
def long_roots(tmp_path):
    """DOCCI, IIW, DCI and ShareGPT4V in their release layouts."""
    docci = tmp_path / "docci"
    rows = []
    for i in range(3):
        image(docci / "images" / f"test_{i:05d}.jpg", i)
        rows.append({"example_id": f"test_{i:05d}", "split": "test", "image_file": f"test_{i:05d}.jpg",
                     "description": f"Docci description {i}. More text."})
    rows.append({"example_id": "train_00000", "split": "train", "image_file": "train_00000.jpg",
                 "description": "not in test"})
    docci.joinpath("docci_descriptions.jsonlines").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    iiw = tmp_path / "iiw"
    (iiw / "datasets" / "DOCCI_Test").mkdir(parents=True)
    (iiw / "datasets" / "DOCCI_Test" / "data.jsonl").write_text("\n".join(json.dumps(
        {"image": f"test_{i:05d}", "IIW": f"First sentence {i}. Second sentence {i}. Third, e.g. more.",
         "DOCCI": "x"}) for i in range(2)) + "\n")
    for i in range(2):
        image(iiw / "images" / "DOCCI_Test" / f"test_{i:05d}.jpg", i)

    dci = tmp_path / "dci" / "densely_captioned_images"
    (dci / "annotations").mkdir(parents=True)
    names = []
    for i in range(3):
        name = f"sa_{i}.json"
        names.append(name)
        (dci / "annotations" / name).write_text(json.dumps(
            {"image": f"sa_{i}.jpg", "short_caption": f"Short {i}.", "extra_caption": f"Extra   detail {i}.\nMore."}))
        image(dci / "photos" / f"sa_{i}.jpg", i)
    (dci / "splits.json").write_text(json.dumps({"train": names[:1], "valid": names[1:2], "test": names[2:]}))

    share = tmp_path / "sharegpt4v"
    entries = []
    for i in range(1002):
        entries.append({"id": str(i), "image": f"coco/train2017/{i % 3}.jpg",
                        "conversations": [{"from": "human", "value": "<image>"},
                                          {"from": "gpt", "value": f"ShareGPT4V caption {i}."}]})
    for i in range(3):
        image(share / "coco" / "train2017" / f"{i}.jpg", i)
    (share / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(entries))
    return {"docci": docci, "iiw": iiw, "dci": tmp_path / "dci", "sharegpt4v": share}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A 32 px synthetic world with every split (for the CLI and the blind pairs)."""
    from memclip_train.synth import SynthConfig, generate_world
    from memclip_train.synth.render import RenderConfig

    folder = tmp_path_factory.mktemp("evalworld") / "world"
    config = SynthConfig(seed=2, train=0, val=0, retrieval=12, segmentation=4, pairs_per_pattern=2,
                         render=RenderConfig(image_size=32, supersample=2))
    generate_world(config, folder, workers=1, progress=False)
    return folder
