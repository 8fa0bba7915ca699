"""A TrainConfig and its command line are one thing: ``parse_args(config.to_argv()) == config``; ``-c RECIPE``."""
import json

import pytest

from memclip_train.params import parse_args

EVERY_SECTION = [
    "--train-data", "/d/{000000..000003}.tar", "--val-data", "/d/val.tar", "--workers", "3", "--caption-key",
    "json.short", "--dataset-resampled", "--csv-separator", ",",
    "--model", "ViT-Tiny-8-mem", "--pretrained", "synth", "--precision", "fp32", "--trainable", "memory,visual",
    "--value-lr", "5e-3", "--memory", "layers=2,3", "--memory", "mode=parallel", "--memory", "gated=true",
    "--force-image-size", "32", "48", "--image-mean", "0.5", "0.4", "0.3", "--text-context-length", "248",
    "--text-pos-stretch", "longclip", "--aug-cfg", "scale=(0.9, 1.0)", "use_timm=True",
    "--batch-size", "20", "--epochs", "3", "--lr", "1e-5", "--wd", "0.05", "--warmup-fraction", "0.04",
    "--accum-freq", "4", "--grad-clip-norm", "1.5",
    "--long-short-alpha", "0.8", "--distill-trainable", "memory,visual",
    "--logs-dir", "/runs", "--name", "stage2", "--report-to", "none", "--log-every-n-steps", "5", "--no-progress",
    "--resume", "latest", "-v",
    "--dist-backend", "gloo", "--ddp-static-graph", "--seed", "7", "--device", "cpu",
]


def test_a_config_with_every_section_changed_prints_the_command_that_gives_it():
    config = parse_args(EVERY_SECTION)
    argv = config.to_argv()
    assert parse_args(argv) == config
    assert argv[:2] == ["--train-data", "/d/{000000..000003}.tar"]
    plain = parse_args(["--train-data", "x"]).to_argv()  # defaults are left out, but for the few a reader looks for
    assert plain == ["--train-data", "x", "--model", "ViT-Tiny-8", "--batch-size", "64", "--epochs", "32", "--lr",
                     "0.0005", "--wd", "0.2"]


def test_a_recipe_file_gives_flags_that_the_command_line_overrides(tmp_path):
    recipe = tmp_path / "stage2.yaml"
    recipe.write_text("long-short-alpha: 0.8\ntrainable: visual\nlr: 1e-5\nwarmup: 1000\ngrad_checkpointing: true\n"
                      "memory: [knn=8]\n")
    config = parse_args(["-c", str(recipe), "--train-data", "x.tar", "--lr", "2e-5", "--warmup-fraction", "0.1"])
    assert config.task.long_short_alpha == 0.8 and config.model.trainable == ("visual",)
    assert config.model.grad_checkpointing and config.model.memory == (("knn", 8),)
    assert config.optim.lr == 2e-5  # the command line wins
    assert config.optim.warmup is None and config.optim.warmup_fraction == 0.1  # and so does its exclusive twin
    as_json = tmp_path / "stage2.json"
    as_json.write_text(json.dumps({"long_short_alpha": 0.8, "trainable": "visual"}))
    assert parse_args(["--config", str(as_json), "--train-data", "x.tar"]).task.long_short_alpha == 0.8


@pytest.mark.parametrize("text, message", [
    ("long-short-alpha: 0.8\nlearning-rate: 1\nepoch: 2\n", "learning-rate, epoch: not flags of"),
    ("- 0.8\n", "a mapping"),
    ("distill: yes please\n", "--distill is a switch"),
])
def test_a_bad_recipe_file_is_one_line_naming_what_is_wrong(tmp_path, capsys, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as stop:
        parse_args(["-c", str(recipe), "--train-data", "x.tar"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_missing_recipe_file_is_named(capsys):
    with pytest.raises(SystemExit):
        parse_args(["-c", "/nowhere/recipe.yaml", "--train-data", "x.tar"])
    assert "-c /nowhere/recipe.yaml: no such recipe file" in capsys.readouterr().err
