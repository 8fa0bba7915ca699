"""The training recipes are typed values written once; every stage built from them prints as a command that parses
back into the same config, the shipped recipe files are the recipes, and runs recorded with the old hand-written
commands are still recognised."""
import json

import pytest

import repo_paths

from memclip_train.demo.pipeline import DemoPipeline
from memclip_train.demo.plan import DemoPlan
from memclip_train.params import parse_args
from memclip_train.pretrain import PretrainPipeline, PretrainPlan
from memclip_train.recipes import RECIPES, STAGE2_ALPHA, main, recipe_text
from memclip_train.stages import StageRecords
from memclip_train.sweep import PRESETS, Sweep, SweepData, grid_points

SHIPPED = repo_paths.REPO / "configs" / "recipes"


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_is_its_printed_command_and_its_shipped_file(name):
    recipe = RECIPES[name]
    config = recipe.config("/d/{000000..000009}.tar")
    assert parse_args(config.to_argv()) == config
    assert (SHIPPED / f"{name}.yaml").read_text() == recipe_text(recipe), "rewrite: python -m memclip_train.recipes " \
                                                                          "--write configs/recipes"
    assert parse_args(["-c", str(SHIPPED / f"{name}.yaml"), "--train-data", "/d/{000000..000009}.tar"]) == config


def test_the_thesis_recipes_hold_the_thesis_values():
    finetune = RECIPES["thesis-finetune"].config()
    assert finetune.task.long_short_alpha == STAGE2_ALPHA == 0.8 and isinstance(finetune.task.long_short_alpha, float)
    assert (finetune.data.caption_key, finetune.data.long_caption_key) == ("txt", "json.long")
    assert finetune.model.trainable == ("memory", "visual") and finetune.model.text_context_length is None
    assert (finetune.optim.lr, finetune.optim.epochs, finetune.optim.warmup) == (1e-5, 10, 1000)
    longclip = RECIPES["thesis-finetune-longclip248"].config()
    assert longclip.model.trainable == ("memory", "visual", "text")
    assert (longclip.model.text_context_length, longclip.model.text_pos_stretch) == (248, "longclip")
    distill = RECIPES["thesis-distill"].config()
    assert distill.task.distill and distill.model.pretrained == "openai"
    optim = distill.optim
    assert (optim.batch_size, optim.accum_freq, optim.lr, optim.epochs) == (20, 4, 5e-4, 38)
    teacher = RECIPES["teacher-pretrain"].config()
    assert (teacher.optim.batch_size, teacher.optim.lr, teacher.optim.warmup) == (128, 1e-3, 500)
    assert PretrainPlan().lr == teacher.optim.lr and PretrainPlan().epochs == teacher.optim.epochs


def stage_commands(tmp_path):
    """Every training command the demo, the sweep and pretraining build."""
    commands = []
    for plan in (DemoPlan(), DemoPlan.quick(), DemoPlan.quick("longclip")):
        commands += [stage.args for stage in DemoPipeline(tmp_path, plan, progress=False).stages()
                     if stage.module == "memclip_train.main"]
    for preset in PRESETS.values():
        sweep = Sweep(tmp_path, preset.model, preset.teacher, preset,
                      SweepData("/d/{0..1}.tar", None, (("synth-long", "/w"),)))
        point = grid_points("knn", preset.model, preset.n_keys, preset.v_dims, preset.knns)[0]
        commands += [sweep.commands(point)[stage] for stage in ("distill", "finetune")]
    commands.append(PretrainPipeline(tmp_path, PretrainPlan()).teacher_args())
    return commands


def test_every_stage_prints_the_command_of_its_config(tmp_path):
    commands = stage_commands(tmp_path)
    assert len(commands) == 3 * 4 + 4 + 1
    for args in commands:
        config = parse_args(args)
        assert parse_args(config.to_argv()) == config
        if "--memory" not in args or "mode=parallel" in args:  # a sweep point's --memory follows its recipe's flags
            assert config.to_argv() == args
    stage2 = [args for args in commands if "--long-short-alpha" in args]
    assert stage2 and all(args[args.index("--long-short-alpha") + 1] == "0.8" for args in stage2)


OLD_QUICK_DISTILL = [  # the demo's --quick stage 1 as stages.json recorded it before the recipes were typed values
    "memclip_train.main", "--train-data", "{world}/train/{{000000..000000}}.tar", "--val-data",
    "{world}/val/000000.tar", "--precision", "fp32", "--workers", "1", "--seed", "0", "--logs", "{logs}", "--name",
    "student-distill", "--log-every-n-steps", "5", "--save-every-n-steps", "50", "--epochs", "1", "--lr", "0.002",
    "--batch-size", "64", "--warmup", "2", "--wd", "0.05", "--value-lr", "5e-3", "--model", "ViT-Tiny-8-mem",
    "--distill", "--pretrained", "synth"]


def test_a_stage_recorded_with_the_old_spelling_is_still_the_same_stage(tmp_path):
    pipeline = DemoPipeline(tmp_path, DemoPlan.quick(), progress=False)
    stage = next(stage for stage in pipeline.stages() if stage.name == "student-distill")
    old = [arg.format(world=pipeline.world, logs=pipeline.logs) for arg in OLD_QUICK_DISTILL]
    assert old[1:] != stage.args  # spelled differently ...
    (tmp_path / "stages.json").write_text(json.dumps({stage.name: {"settings": old, "finished": False}}))
    assert StageRecords(tmp_path / "stages.json").check(stage) is False  # ... but the same settings: continued
    changed = [arg if arg != "0.002" else "0.003" for arg in old]
    (tmp_path / "stages.json").write_text(json.dumps({stage.name: {"settings": changed, "finished": False}}))
    with pytest.raises(Exception, match=r"--lr 0.003 \(now 0.002\)"):
        StageRecords(tmp_path / "stages.json").check(stage)


def test_recipes_write_their_files(tmp_path, capsys):
    assert main(["--write", str(tmp_path), "thesis-finetune"]) == 0
    assert (tmp_path / "thesis-finetune.yaml").read_text() == (SHIPPED / "thesis-finetune.yaml").read_text()
    with pytest.raises(SystemExit):
        main(["thesis-stage3"])
    assert "thesis-stage3: not a recipe" in capsys.readouterr().err
