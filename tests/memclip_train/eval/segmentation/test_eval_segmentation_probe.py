"""The linear probe on dense features: patch labels, the fit, and the probe scored by the zero-shot protocol."""
import json

import numpy as np
import pytest
import torch
from eval_files import write_voc
from PIL import Image

from memclip.precision import autocast_for
from memclip_train.eval.segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation
from memclip_train.eval.segmentation import load_segmentation_set
from memclip_train.eval.__main__ import main
from memclip_train.eval.segmentation.datasets import IGNORE
from memclip_train.eval.segmentation.probe import fit_linear_probe, patch_labels, probe_training_set

COLOURS = [(230, 30, 30), (30, 200, 40), (40, 60, 230)]


def colour_world(root, seed: int, count: int = 8):
    """32 px images: two 16 px squares on black, each filled with its class's colour (classes.txt: red, green,
    blue; mask 0 = background)."""
    rng = np.random.default_rng(seed)
    names, masks = [], []
    for index in range(count):
        mask = np.zeros((32, 32), dtype=np.int64)
        for cell in rng.choice(4, size=2, replace=False):
            mask[16 * (cell // 2):16 * (cell // 2) + 16, 16 * (cell % 2):16 * (cell % 2) + 16] = rng.integers(3) + 1
        names.append(f"{seed}_{index}")
        masks.append(mask)
    split = write_voc(root / "segmentation", names, masks)
    for name, mask in zip(names, masks):   # write_voc draws placeholders: paint the squares (PNG data, lossless)
        pixels = np.zeros((32, 32, 3), dtype=np.uint8)
        for label, colour in enumerate(COLOURS):
            pixels[mask == label + 1] = colour
        Image.fromarray(pixels).save(split / "JPEGImages" / f"{name}.jpg", format="PNG")
    (split / "classes.txt").write_text("red\ngreen\nblue\n")
    return root


def test_patch_labels_take_the_majority_class_that_covers_enough_of_a_patch():
    mask = np.full((8, 8), IGNORE, dtype=np.int64)
    mask[:4, :4] = 3                   # a whole patch of class 3
    mask[:1, 4:] = 1                   # a quarter of a patch: just enough
    mask[4:, :4] = 2
    mask[4:, :2] = 5                   # half 5, half 2: a tie goes to the lower class
    mask[4:5, 4:6] = 0                 # two pixels of 16: too few
    labels = patch_labels(mask, (2, 2))
    assert labels.tolist() == [[3, 1], [2, -1]]
    assert patch_labels(mask, (2, 2), min_share=0.3).tolist() == [[3, -1], [2, -1]]
    with pytest.raises(ValueError, match="does not split"):
        patch_labels(mask[:7], (2, 2))


def test_the_probe_fits_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=-1)
    labels = torch.randint(0, 4, (400,), generator=generator)
    features = torch.nn.functional.normalize(centres[labels] + 0.3 * torch.randn(400, 16, generator=generator), dim=-1)
    weights = fit_linear_probe(features, labels, 4)
    assert weights.shape == (4, 16)
    assert ((features @ weights.T).argmax(1) == labels).float().mean() > 0.95
    assert torch.equal(weights, fit_linear_probe(features, labels, 4)), "the fit is deterministic"


def test_a_probe_reads_what_the_patches_carry(tmp_path, micro_model):
    """The micro model is untrained, so its text cannot name the colours; its patches still carry them, and the probe
    (fitted on one world, scored on another by the zero-shot protocol) segments them almost perfectly."""
    cpu = torch.device("cpu")
    autocast = autocast_for("fp32", cpu)
    train = load_segmentation_set("synth", colour_world(tmp_path / "train", seed=0))
    test = load_segmentation_set("synth", colour_world(tmp_path / "test", seed=1))
    features, labels = probe_training_set(micro_model.model, train, "vanilla", cpu, autocast)
    assert features.shape == (8 * 2 * 4, 32) and sorted(labels.unique().tolist()) == [0, 1, 2]
    weights = fit_linear_probe(features, labels, 3)
    geometry = SlidingWindow.for_model(32, 1.0)
    probe = ClipSegmenter(micro_model.model, micro_model.tokenizer, test.class_names, "vanilla", geometry, cpu,
                          autocast, classifier=(weights, torch.arange(3)))
    text = ClipSegmenter(micro_model.model, micro_model.tokenizer, test.class_names, "vanilla", geometry, cpu,
                         autocast)
    probed = evaluate_segmentation(test, probe, progress=False)["mIoU"]
    zero_shot = evaluate_segmentation(test, text, progress=False)["mIoU"]
    assert probed > 90 and probed > zero_shot + 30, (probed, zero_shot)


@pytest.mark.slow
def test_the_cli_reports_the_probe_beside_the_zero_shot_score(tmp_path, micro_configs, capsys):
    world, probe_world = colour_world(tmp_path / "test", seed=1), colour_world(tmp_path / "train", seed=0)
    args = ["segmentation", "--model", "Test-Micro", "--pretrained", "none", "--label", "micro", "--out",
            str(tmp_path / "out"), "--dataset", "synth", "--data-root", str(world), "--method", "vanilla",
            "--no-progress"]
    assert main(args + ["--probe-data-root", str(probe_world)]) == 0
    table = (tmp_path / "out" / "segmentation_table.md").read_text()
    assert "| micro [vanilla] |" in table and "| micro [vanilla, linear probe] |" in table
    folder = tmp_path / "out" / "segmentation" / "synth" / "vanilla"
    [probe_json] = folder.glob("*_probe.json")
    assert list(folder.glob("*_probe_overlays/*.png"))
    assert json.loads(probe_json.read_text())["probe_split"] == "val"
    with pytest.raises(SystemExit):
        main(args + ["--dataset", "voc20", "--data-root", str(world), "--probe-data-root", str(probe_world),
                     "--probe-data-root", str(probe_world), "--probe-data-root", str(probe_world)])
    assert "give one --probe-data-root, or one per --dataset (2); got 3" in capsys.readouterr().err
