"""Zero-shot classification: the ImageNet, ImageNet-V2 and ImageFolder layouts, class names and prompts, exact
accuracy on a model whose answer is known, the command line and its cache, and a plug-in dataset."""
import json
import logging
import re

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import ToTensor

from memclip.precision import autocast_for
from memclip_train.eval.models import ModelRef, load_model
from memclip_train.eval.retrieval_sets import LayoutError
from memclip_train.eval.__main__ import main
from memclip_train.eval.retrieval import read_result
from memclip_train.eval.runner import run_zeroshot
from memclip_train.zeroshot import ZeroShotOptions, ZeroShotSet, registry as zeroshot_sets
from memclip_train.zeroshot.accuracy import true_class_ranks
from memclip_train.zeroshot.evaluate import evaluate_zeroshot
from memclip_train.zeroshot.registry import load_zeroshot_set, register_zeroshot_dataset

from eval_files import image

CPU = torch.device("cpu")
RGB = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def image_folder(root, classes, per_class=2):
    for name in classes:
        for j in range(per_class):
            path = root / name / f"{j}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 16), RGB.get(name, (128, 128, 128))).save(path)
    return root


class ColourReader(nn.Module):
    """A stand-in CLIP whose answer is known: an image is its mean colour, a text the colour word it names."""

    def encode_image(self, images, normalize=False):
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)

    def encode_text(self, tokens, normalize=False):
        return F.one_hot(tokens, 3).float()


def colour_tokenizer(texts):
    return torch.tensor([next(i for i, word in enumerate(RGB) if word in text) for text in texts])


def test_imagenet_layout_gives_open_clip_names_and_openai_templates(tmp_path):
    root = tmp_path / "imagenet" / "val"
    for wnid in range(1000):
        (root / f"n{wnid:08d}").mkdir(parents=True)
    image(root / "n00000000" / "a.JPEG", 0)
    image(root / "n00000999" / "b.JPEG", 1)
    image(root / "n00000999" / "c.jpeg", 2)
    for given in (root, root.parent):  # the val folder itself, or the folder above it
        dataset = load_zeroshot_set("imagenet", given, skip_bad=True)  # 998 class folders are empty
        assert len(dataset.bad_items) == 998 and "stays a candidate" in dataset.bad_items[0].reason
        assert dataset.labels == [0, 999, 999] and dataset.class_names == list(open_clip.IMAGENET_CLASSNAMES)
        assert dataset.templates is open_clip.OPENAI_IMAGENET_TEMPLATES and "80 OpenAI" in dataset.prompts_name
        assert dataset.prompts_of(0)[0] == "a bad photo of a tench."
    (root / "n00000999").rename(root / ".hidden")
    with pytest.raises(LayoutError, match="expected 1000 class folders, found 999"):
        load_zeroshot_set("imagenet", root)


def test_imagenet_v2_labels_are_the_folder_numbers(tmp_path):
    parent = tmp_path / "imagenetv2"
    for variant in ("matched-frequency", "threshold0.7"):
        folder = parent / f"imagenetv2-{variant}-format-val"
        for label in range(1000):
            (folder / str(label)).mkdir(parents=True)
        image(folder / "10" / "x.jpeg", 0)
        image(folder / "2" / "y.jpeg", 1)
    image(parent / "imagenetv2-threshold0.7-format-val" / "999" / "z.jpeg", 2)
    default = load_zeroshot_set("imagenet-v2", parent, skip_bad=True)  # most class folders are empty
    assert default.labels == [2, 10] and default.meta["variant"] == "matched-frequency"  # not '10' < '2'
    assert load_zeroshot_set("imagenet-v2", parent, "threshold0.7", skip_bad=True).labels == [2, 10, 999]
    direct = load_zeroshot_set("imagenet-v2", parent / "imagenetv2-matched-frequency-format-val", skip_bad=True)
    assert [p.name for p in direct.images] == ["y.jpeg", "x.jpeg"]
    with pytest.raises(ValueError, match="unknown variant 'top'"):
        load_zeroshot_set("imagenet-v2", parent, "top")
    with pytest.raises(LayoutError, match="imagenetv2-top-images-format-val"):
        load_zeroshot_set("imagenet-v2", parent, "top-images")


def test_image_folder_class_names_and_templates_files(tmp_path):
    root = image_folder(tmp_path / "folder", ["green", "red_ish"])
    plain = load_zeroshot_set("imagefolder", root)
    assert plain.class_names == ["green", "red ish"] and plain.labels == [0, 0, 1, 1]
    names = tmp_path / "names.txt"
    names.write_text("verdant\n\nscarlet\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a {} thing\nsomething {}\n")
    dataset = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names, str(templates)))
    assert dataset.class_names == ["verdant", "scarlet"]
    assert dataset.prompts_of(1) == ["a scarlet thing", "something scarlet"]
    assert dataset.prompts_name == "2 templates from templates.txt"
    assert load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates="simple")).prompts_of(0)[0] == \
        open_clip.SIMPLE_IMAGENET_TEMPLATES[0]("green")
    names.write_text("only one\n")
    with pytest.raises(ValueError, match="1 names for 2 classes"):
        load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    templates.write_text("no placeholder\n")
    with pytest.raises(ValueError, match="has no {}"):
        load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates=str(templates)))


def test_accuracy_is_exact_when_the_answer_is_known(tmp_path):
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"], per_class=3)
    run = dict(device=CPU, autocast=autocast_for("fp32", CPU), progress=False)
    right = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates="simple"))
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, right, **run)
    assert result["metrics"]["top1"] == 100 and result["ranks"] == [0] * 9
    assert result["predictions"] == list(right.labels)
    names = tmp_path / "names.txt"
    names.write_text("green\nred\nblue\n")  # every class named as another one
    wrong = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, wrong, **run)
    # the true class ties with the third one (both off-colour channels are 20): ties count in the image's favour
    assert result["metrics"]["top1"] == 0 and result["metrics"]["top5"] == 100 and set(result["ranks"]) == {1}
    # per-class prompts: class k described only through prompts that name colour k
    prompts = [[f"a {c} circle", f"a small {c} star"] for c in ("blue", "green", "red")]
    per_class = ZeroShotSet("shapes", right.images, right.labels, ["b", "g", "r"], class_prompts=prompts)
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, per_class, **run)
    assert result["metrics"]["top1"] == 100 and result["prompts"] == "per-class prompts (6 in all)"
    half = ZeroShotSet("shapes", right.images, [0, 0, 0, 1, 1, 1, 0, 0, 0], ["b", "g", "r"], class_prompts=prompts)
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, half, **run)
    metrics = result["metrics"]
    assert metrics["top1"] == pytest.approx(100 * 6 / 9) and metrics["mean_per_class_top1"] == pytest.approx(75)
    assert result["predictions"] == list(right.labels)    # what the images show, whatever the labels say


def test_zeroshot_set_refuses_inconsistent_definitions():
    with pytest.raises(ValueError, match="exactly one"):
        ZeroShotSet("x", ["a.jpg"], [0], ["a"])
    with pytest.raises(ValueError, match="label 3 outside"):
        ZeroShotSet("x", ["a.jpg"], [3], ["a"], templates=["{}"])
    with pytest.raises(ValueError, match="class 'b' has no prompts"):
        ZeroShotSet("x", ["a.jpg"], [0], ["a", "b"], class_prompts=[["an a"], []])


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


def test_nan_scores_rank_the_true_class_last():
    """A NaN true score used to rank first (rank 0: 'logits > NaN' is false everywhere), and argmax picked NaN."""
    logits = torch.tensor([[0.1, float("nan"), 0.3], [float("nan"), 0.2, 0.1], [0.5, 0.2, 0.1]])
    labels = torch.tensor([1, 1, 0])
    assert true_class_ranks(logits, labels).tolist() == [2, 0, 0]
    nan = torch.full((2, 4), float("nan"))
    assert true_class_ranks(nan, torch.tensor([0, 3])).tolist() == [3, 3]


class NaNReader(ColourReader):
    def encode_image(self, images, normalize=False):
        return torch.full((len(images), 3), float("nan"))


def test_non_finite_features_are_an_error_naming_the_model(tmp_path):
    dataset = load_zeroshot_set("imagefolder", image_folder(tmp_path / "colours", ["blue", "green", "red"]),
                                options=ZeroShotOptions(templates="simple"))
    with pytest.raises(ValueError, match="the model gives non-finite"):  # the eval program names its label
        evaluate_zeroshot(NaNReader(), ToTensor(), colour_tokenizer, dataset, CPU, autocast_for("fp32", CPU),
                          progress=False)


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


def test_images_outside_every_class_folder_are_named(tmp_path):
    root = image_folder(tmp_path / "colours", ["blue", "green"])
    image(root / "stray.jpg", 0)
    with pytest.raises(ValueError, match="stray.jpg, image: is outside every class folder"):
        load_zeroshot_set("imagefolder", root)
    assert len(load_zeroshot_set("imagefolder", root, skip_bad=True).images) == 4


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


def test_a_class_name_given_twice_is_warned_about(tmp_path, caplog):
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"])
    names = tmp_path / "names.txt"
    names.write_text("crane\ncrane\nred\n")
    dataset = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    assert dataset.class_names == ["crane", "crane", "red"] and "given to more than one class" in caplog.text
