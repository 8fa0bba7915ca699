"""Zero-shot classification through the eval program: the command line matches a direct computation and caches, its
errors, and a plug-in dataset (the zero-shot core's own tests: tests/memclip_train/zeroshot/)."""
import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from memclip.precision import autocast_for
from memclip_train.eval.models import ModelRef, load_model
from memclip_train.eval.__main__ import main
from memclip_train.eval.retrieval import read_result
from memclip_train.eval.runner import run_zeroshot
from memclip_train.zeroshot import ZeroShotOptions, ZeroShotSet, registry as zeroshot_sets
from memclip_train.zeroshot.evaluate import evaluate_zeroshot
from memclip_train.zeroshot.registry import load_zeroshot_set, register_zeroshot_dataset

from zeroshot_helpers import ColourReader, image_folder

CPU = torch.device("cpu")


def _direct_ranks(loaded, images, labels, prompts):
    """Independent check: each class is the normalised mean of its normalised prompt embeddings."""
    with torch.no_grad():
        classes = []
        for texts in prompts:
            text = F.normalize(loaded.model.encode_text(loaded.tokenizer(texts)), dim=-1).mean(0)
            classes.append(F.normalize(text, dim=-1))
        pixels = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in images])
        scores = F.normalize(loaded.model.encode_image(pixels), dim=-1) @ torch.stack(classes).T
    return [int((row > row[label]).sum()) for row, label in zip(scores, labels)]


def test_command_line_matches_a_direct_computation_and_caches(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="memclip_train.eval.runner")
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"], per_class=2)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {} thing.\na {} picture\n")
    out = tmp_path / "out"
    argv = ["zeroshot", "--model", "ViT-Tiny-8", "--dataset", "imagefolder", "--data-root", str(root),
            "--templates", str(templates), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    stored = out / "zeroshot" / "imagefolder" / "ViT-Tiny-8_random.json"
    result = read_result(stored)
    torch.manual_seed(0)
    loaded = load_model(ModelRef("ViT-Tiny-8"), CPU)  # random weights: the same seed builds the same model
    dataset = load_zeroshot_set("imagefolder", root)
    prompts = [[f"a photo of a {c} thing.", f"a {c} picture"] for c in dataset.class_names]
    assert result["ranks"] == _direct_ranks(loaded, dataset.images, dataset.labels, prompts)
    assert result["metrics"]["top1"] == pytest.approx(100 * sum(r == 0 for r in result["ranks"]) / 6)
    assert result["num_classes"] == 3 and result["prompts"] == "2 templates from templates.txt"
    assert "imagefolder top-1" in (out / "zeroshot_table.md").read_text()
    caplog.clear()
    assert main(argv) == 0 and "cached in" in caplog.text
    templates.write_text("a {}\n")  # another prompt set is another result
    caplog.clear()
    assert main(argv) == 0 and "cached in" not in caplog.text


def test_command_line_errors(tmp_path, capsys):
    assert main(["zeroshot", "--model", "ViT-Tiny-8", "--dataset", "imagenet", "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "expected 1000 class folders" in err and "expected layout" in err
    with pytest.raises(SystemExit) as parsed:  # refused when parsed, before any model is loaded
        main(["zeroshot", "--model", "ViT-Tiny-8", "--dataset", "imagenet-21k", "--data-root", str(tmp_path),
              "--out", str(tmp_path / "o"), "--no-progress"])
    assert parsed.value.code == 2 and "unknown zero-shot dataset 'imagenet-21k'" in capsys.readouterr().err


def test_a_plug_in_dataset_of_encoded_images_with_per_class_prompts(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"], per_class=1)
    files = load_zeroshot_set("imagefolder", root)
    prompts = [[f"a {c} circle", f"a {c} square"] for c in files.class_names]

    def load_encoded(folder, variant):
        encoded = [path.read_bytes() for path in files.images]
        return ZeroShotSet("synth-colours", encoded, files.labels, files.class_names, class_prompts=prompts,
                           meta={"variant": variant})

    monkeypatch.setattr(zeroshot_sets, "ZEROSHOT_DATASETS", dict(zeroshot_sets.ZEROSHOT_DATASETS))
    register_zeroshot_dataset("synth-colours", load_encoded, ("objects",), "objects")
    assert isinstance(load_zeroshot_set("synth-colours", root).images[0], bytes)
    results = run_zeroshot([ModelRef("ViT-Tiny-8")], ["synth-colours"], [root], tmp_path / "out", CPU, "fp32",
                           progress=False)
    result = results["ViT-Tiny-8 (random)"]["synth-colours"]
    torch.manual_seed(0)
    loaded = load_model(ModelRef("ViT-Tiny-8"), CPU)
    assert result["ranks"] == _direct_ranks(loaded, files.images, files.labels, prompts)
    assert result["variant"] == "objects"
    with pytest.raises(ValueError, match="brings its own prompts"):
        load_zeroshot_set("synth-colours", root, options=ZeroShotOptions(templates="simple"))
    broken = ZeroShotSet("synth-colours", [b"not an image"], [0], ["a"], class_prompts=[["an a"]])
    with pytest.raises(Exception, match=r"#0 \(12 encoded bytes\)"):
        evaluate_zeroshot(loaded.model, loaded.preprocess, loaded.tokenizer, broken, CPU,
                          autocast_for("fp32", CPU), progress=False)


class NaNReader(ColourReader):
    def encode_image(self, images, normalize=False):
        return torch.full((len(images), 3), float("nan"))


def test_an_empty_class_folder_is_not_an_extra_class(tmp_path, capsys):
    """An empty class folder used to become a fourth class, a distractor no image has (top-1 moved, no warning)."""
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"])
    (root / "purple").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(root / "purple")) + ", class folder: holds no image"):
        load_zeroshot_set("imagefolder", root)
    counted = load_zeroshot_set("imagefolder", root, skip_bad=True)
    assert counted.class_names == ["blue", "green", "red"] and len(counted.bad_items) == 1
    argv = ["zeroshot", "--model", "ViT-Tiny-8", "--dataset", "imagefolder", "--data-root", str(root), "--out",
            str(tmp_path / "out"), "--no-progress", "--templates", "simple"]
    assert main(argv) == 2 and "purple" in capsys.readouterr().err
    assert main(argv + ["--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "imagefolder skipped" in printed and printed.strip().splitlines()[-1].endswith("| 1 |")
    result = json.loads((tmp_path / "out" / "zeroshot" / "imagefolder" / "ViT-Tiny-8_random.json").read_text())
    assert result["num_classes"] == 3 and result["skipped"]["bad_items"] == 1


@pytest.mark.parametrize("template, problem", [
    ("a {} next to a {}", "has 2 slots"),
    ("a {0} photo", r"has 1 slots \(\{0\}\)"),
    ("a {name} photo", "has 1 slots"),
    ("a {} photo }", "not a format string"),
])
def test_templates_are_checked_when_they_are_read(tmp_path, template, problem, capsys):
    """A template with two {} used to end in an IndexError after the model had loaded."""
    templates = tmp_path / "templates.txt"
    templates.write_text(f"a photo of a {{}}.\n{template}\n")
    root = image_folder(tmp_path / "colours", ["blue", "green"])
    with pytest.raises(ValueError, match=f"{re.escape(str(templates))}: the template .*{problem}"):
        load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates=str(templates)))
    with pytest.raises(SystemExit):  # refused when parsed: no model is loaded
        main(["zeroshot", "--model", "ViT-Tiny-8", "--dataset", "imagefolder", "--data-root", str(root),
              "--templates", str(templates), "--out", str(tmp_path / "out"), "--no-progress"])
    assert "argument --templates" in capsys.readouterr().err

