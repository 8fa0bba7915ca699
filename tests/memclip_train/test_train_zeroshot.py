"""Zero-shot classification during training (--zeroshot-frequency, --imagenet-val, --imagenet-v2, as
open_clip_train; --zeroshot-synth on a synthetic world)."""
import json

import pytest
import torch
from PIL import Image
from train_helpers import train_args

import memclip
from memclip.precision import autocast_for
from memclip_train.zeroshot import image_folders
from memclip_train.zeroshot.evaluate import evaluate_zeroshot
from memclip_train.zeroshot.registry import load_zeroshot_set
from memclip_train.main import main
from memclip_train.synth import SynthConfig, generate_world
from memclip_train.synth.render import RenderConfig


@pytest.fixture
def one_template(monkeypatch):
    """One template instead of OpenAI's 80: 80,000 prompts take minutes on a CPU, 1,000 take a second."""
    monkeypatch.setattr(image_folders, "OPENAI_IMAGENET_TEMPLATES", ("a photo of a {}.",))


def imagenet_like(root, folder_name):
    """1,000 class folders, images in a few of them."""
    for label in range(1000):
        (root / folder_name(label)).mkdir(parents=True)
    for label in (0, 3, 500, 999):
        for j in range(2):
            Image.new("RGB", (32, 32), (label % 256, (37 * j) % 256, 90)).save(root / folder_name(label) / f"{j}.jpg")
    return root


def test_zero_shot_runs_at_the_frequency_and_after_the_last_epoch(micro_world, tmp_path, one_template):
    val = imagenet_like(tmp_path / "imagenet", lambda label: f"n{label:08d}")
    v2 = imagenet_like(tmp_path / "v2" / "imagenetv2-matched-frequency-format-val", str)
    args = train_args(micro_world, tmp_path, "zs", "--imagenet-val", str(val), "--imagenet-v2", str(v2.parent),
                      "--zeroshot-frequency", "2", "--epochs", "3")
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "zs" / "metrics.jsonl").read_text().splitlines()]
    zeroshot = [r for r in records if r["kind"] == "zeroshot"]
    assert [r["epoch"] for r in zeroshot] == [2, 3]
    for prefix in ("imagenet-zeroshot-val", "imagenetv2-zeroshot-val"):
        assert 0 <= zeroshot[-1][f"{prefix}-top1"] <= zeroshot[-1][f"{prefix}-top5"] <= 1
        assert zeroshot[-1][f"{prefix}-skipped"] == 0
        assert zeroshot[-1][f"{prefix}-bad-items"] == 996, "the empty class folders are counted"
    final = memclip.create_model(str(tmp_path / "zs" / "final"))
    final_preprocess = memclip.create_model_and_transforms(str(tmp_path / "zs" / "final"))[2]
    cpu = torch.device("cpu")
    direct = evaluate_zeroshot(final, final_preprocess, memclip.get_tokenizer(final.memclip_spec),
                               load_zeroshot_set("imagenet", val, skip_bad=True), cpu, autocast_for("fp32", cpu),
                               progress=False)
    assert zeroshot[-1]["imagenet-zeroshot-val-top1"] == pytest.approx(direct["metrics"]["top1"] / 100)
    assert zeroshot[-1]["imagenet-zeroshot-val-top5"] == pytest.approx(direct["metrics"]["top5"] / 100)


@pytest.mark.slow
def test_zero_shot_frequency_zero_and_bad_folders(micro_world, tmp_path, capsys, one_template):
    val = imagenet_like(tmp_path / "imagenet", lambda label: f"n{label:08d}")
    assert main(train_args(micro_world, tmp_path, "never", "--imagenet-val", str(val), "--zeroshot-frequency", "0",
                           "--epochs", "1")) == 0
    assert '"kind": "zeroshot"' not in (tmp_path / "never" / "metrics.jsonl").read_text()
    assert main(train_args(micro_world, tmp_path, "bad", "--imagenet-val", str(tmp_path / "nowhere"))) == 2
    err = capsys.readouterr().err
    assert "imagenet: missing" in err and "expected layout" in err
    with pytest.raises(SystemExit):
        main(train_args(micro_world, tmp_path, "negative", "--zeroshot-frequency", "-1"))


@pytest.mark.slow
def test_zero_shot_on_a_synthetic_world_logs_its_salient_object_attributes(micro_world, tmp_path, capsys):
    """--zeroshot-synth: the three attribute classifiers each completed epoch, the same figures as the eval program."""
    world = tmp_path / "heldout"
    generate_world(SynthConfig(seed=3, train=0, val=0, retrieval=12, segmentation=0, pairs_per_pattern=0,
                               render=RenderConfig(image_size=32, supersample=2)), world, workers=1, progress=False)
    assert main(train_args(micro_world, tmp_path, "synth-zs", "--zeroshot-synth", str(world),
                           "--zeroshot-frequency", "1")) == 0
    records = [json.loads(line) for line in (tmp_path / "synth-zs" / "metrics.jsonl").read_text().splitlines()]
    zeroshot = [r for r in records if r["kind"] == "zeroshot"]
    assert [r["epoch"] for r in zeroshot] == [1, 2]
    final = memclip.create_model(str(tmp_path / "synth-zs" / "final"))
    final_preprocess = memclip.create_model_and_transforms(str(tmp_path / "synth-zs" / "final"))[2]
    cpu = torch.device("cpu")
    for name in ("synth-shapes", "synth-colours", "synth-sizes"):
        direct = evaluate_zeroshot(final, final_preprocess, memclip.get_tokenizer(final.memclip_spec),
                                   load_zeroshot_set(name, world), cpu, autocast_for("fp32", cpu), progress=False)
        assert zeroshot[-1][f"{name}-zeroshot-top1"] == pytest.approx(direct["metrics"]["top1"] / 100)
    assert main(train_args(micro_world, tmp_path, "no-world", "--zeroshot-synth", str(micro_world))) == 2
    assert "scenes.jsonl" in capsys.readouterr().err     # a world without retrieval images has no scene graphs
