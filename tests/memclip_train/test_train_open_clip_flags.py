"""python -m memclip_train.main accepts every flag of open_clip_train's own parser, with the same meaning, except a
short list of flags that cannot apply, each refused with its reason."""
import argparse
import json
from unittest import mock

import open_clip
import pytest
import torch
from open_clip_train import params as open_clip_params
from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr
from safetensors.torch import load_file
from train_helpers import train_args

import memclip
from memclip_train import distributed
from memclip_train.data.shard_stream import ShardStream
from memclip_train.data.sources import shard_weights
from memclip_train.distributed import DistributedEnv
from memclip_train.main import create_optimizer, main, wrap_for_training
from memclip_train.params import INAPPLICABLE_FLAGS, build_parser, parse_args
from memclip_train.schedule import LearningRateSchedule
from memclip_train.tasks.build import build_task

# A value for every open_clip_train flag that takes one (others: the open_clip default, or 3 / 0.25 / "x").
SAMPLES = {
    "--train-data": ["a.tar::b.tar"], "--train-data-upsampling-factors": ["1::2"], "--precision": ["pure_bf16"],
    "--dataset-type": ["csv"], "--lr-scheduler": ["const-cooldown"], "--opt": ["timm/sgd"],
    "--report-to": ["tensorboard"], "--loss-dist-impl": ["shift"], "--image-mean": ["0.5", "0.4", "0.3"],
    "--image-std": ["0.2", "0.2", "0.2"], "--force-image-size": ["96", "64"], "--aug-cfg": ["scale=(0.5, 1.0)", "re_prob=0.25"],
    "--model": ["ViT-B-16"], "--distill-model": ["ViT-B-32"], "--device": ["cpu"], "--dist-backend": ["gloo"],
    "--image-interpolation": ["bilinear"], "--image-resize-mode": ["squash"], "--force-patch-dropout": ["0.25"],
}
# Flags that only make sense with another one (open_clip_train's pairings, checked by memclip's config).
COMPANIONS = {
    "--train-data-upsampling-factors": ["--dataset-resampled", "--train-data", "a.tar::b.tar"],
    "--distill-model": ["--distill-pretrained", "openai"], "--distill-pretrained": ["--distill-model", "ViT-B-32"],
    "--lr-scheduler": ["--epochs-cooldown", "3"],
}


def open_clip_parser() -> argparse.ArgumentParser:
    """open_clip_train 3.3's own parser, as its parse_args builds it."""
    captured = {}

    def capture(parser, args=None, namespace=None):
        captured["parser"] = parser
        raise SystemExit

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(SystemExit):
        open_clip_params.parse_args([])
    return captured["parser"]


def flag_actions(parser: argparse.ArgumentParser):
    """{flag: action} for every option string but --help."""
    return {flag: action for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"}


def sample_argv(flag: str, action: argparse.Action) -> list:
    if action.nargs == 0:
        return [flag]
    if flag in SAMPLES:
        return [flag, *SAMPLES[flag]]
    if action.choices:
        return [flag, list(action.choices)[-1]]
    if action.type in (int, float):
        return [flag, "3" if action.type is int else "0.25"]
    return [flag, str(action.default) if isinstance(action.default, str) and action.default else "x"]


def comparable(flag: str, value):
    if flag == "--report-to":
        return list(value) if isinstance(value, (list, tuple)) else value.split(",")
    if flag == "--aug-cfg":
        return dict(value)
    return list(value) if isinstance(value, (list, tuple)) else value


def test_every_open_clip_train_flag_is_accepted_or_refused_with_a_reason():
    theirs, ours = flag_actions(open_clip_parser()), flag_actions(build_parser())
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"open_clip_train flags memclip does not accept: {missing}"
    assert set(INAPPLICABLE_FLAGS) <= set(theirs) and len(INAPPLICABLE_FLAGS) <= 10
    for flag, action in theirs.items():
        argv = sample_argv(flag, action)
        if flag in INAPPLICABLE_FLAGS:
            with pytest.raises(SystemExit), mock.patch.object(argparse.ArgumentParser, "_print_message") as err:
                build_parser().parse_args(argv)
            assert INAPPLICABLE_FLAGS[flag][1] in str(err.call_args), flag
            continue
        if action.choices:
            assert set(action.choices) <= set(ours[flag].choices), flag
        parsed_theirs = open_clip_parser().parse_args(argv)
        parsed_ours = build_parser().parse_args(argv)
        assert comparable(flag, getattr(parsed_ours, action.dest)) == \
            comparable(flag, getattr(parsed_theirs, action.dest)), flag


MISTAKES = [
    (["--lr", "nan"], "--lr nan"), (["--lr", "NaN"], "--lr nan"), (["--lr", "inf"], "--lr inf"),
    (["--lr", "1e999"], "--lr inf"), (["--lr=-1e-3"], "--lr -0.001"), (["--wd", "inf"], "--wd inf"),
    (["--beta1", "1"], "--beta1 1.0"), (["--beta2", "1.5"], "--beta2 1.5"), (["--beta2=-0.1"], "--beta2 -0.1"),
    (["--beta1", "nan"], "--beta1 nan"), (["--eps=-1e-8"], "--eps -1e-08"), (["--eps", "nan"], "--eps nan"),
    (["--momentum", "1"], "--momentum 1.0"), (["--lr-cooldown-power", "0"], "--lr-cooldown-power 0.0"),
    (["--lr-cooldown-end", "nan"], "--lr-cooldown-end nan"),
    (["--lr-scheduler", "const-cooldown", "--epochs-cooldown", "1", "--lr-cooldown-end", "1"], "--lr-cooldown-end 1"),
    (["--grad-clip-norm", "inf"], "--grad-clip-norm inf"), (["--grad-clip-norm", "0"], "--grad-clip-norm 0.0"),
    (["--value-lr", "nan"], "--value-lr nan"), (["--value-lr=-inf"], "--value-lr -inf"),
    (["--memory", "value_lr=nan"], "value_lr must be a finite number"),
    (["--memory", "value_lr=Infinity"], "value_lr must be a finite number"),
    (["--memory", "layers=a,b"], "layers are block indices"),
    (["--distill-layer-weight", "inf"], "--distill-layer-weight inf"),
    (["--long-short-alpha", "nan"], "--long-short-alpha nan"),
    (["--image-std", "0", "0.2", "0.2"], "--image-std 0.0"), (["--image-std=-0.2"], "--image-std -0.2"),
    (["--image-mean", "nan", "0.4", "0.3"], "--image-mean nan"), (["--image-mean", "0.5", "0.4"], "--image-mean"),
    (["--text-context-length", "0"], "--text-context-length 0"),
    (["--text-context-length=-5"], "--text-context-length -5"),
    (["--force-context-length", "0"], "--force-context-length 0"), (["--force-image-size", "0"], "--force-image-size"),
    (["--force-image-size", "64", "64", "64"], "--force-image-size"), (["--rope-ntk-factor", "0"], "--rope-ntk-factor"),
    (["--rope-ntk-factor", "nan"], "--rope-ntk-factor nan"),
    (["--aug-cfg", "scale=(0.9, 1.2)"], "--aug-cfg scale"), (["--aug-cfg", "re_prob=2"], "--aug-cfg re_prob"),
    (["--aug-cfg", "colour=1"], "--aug-cfg colour: not an open_clip augmentation setting"),
    (["--aug-cfg", "color_jitter_prob=0.5"], "--aug-cfg color_jitter_prob needs color_jitter"),
    (["--dataset-resampled", "--train-data", "a.tar::b.tar", "--train-data-upsampling-factors", "1::inf"],
     "--train-data-upsampling-factors"),
    (["--dataset-resampled", "--train-data", "a.tar::b.tar", "--train-data-upsampling-factors", "0::0"],
     "at least one above 0"),
    (["--caption-key", ""], "--caption-key is empty"), (["--csv-separator", ""], "--csv-separator is empty"),
    (["--name", ""], "--name ''"), (["--name", "../elsewhere"], "--name '../elsewhere'"),
]


@pytest.mark.parametrize("flags,named", MISTAKES, ids=[" ".join(flags) for flags, _ in MISTAKES])
def test_a_flag_value_that_can_only_be_a_mistake_is_refused_when_parsed(flags, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--train-data", "a.tar", *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and named in err, err[-500:]


def test_every_accepted_flag_reaches_the_training_config():
    for flag, action in flag_actions(open_clip_parser()).items():
        if flag in INAPPLICABLE_FLAGS:
            continue
        argv = sample_argv(flag, action) + COMPANIONS.get(flag, [])
        argv = argv if flag == "--train-data" else ["--train-data", "a.tar"] + argv
        if flag == "--dataset-type":
            argv[-1] = "webdataset"
        config = parse_args(argv).to_dict()
        fields = {key for section in config.values() if isinstance(section, dict) for key in section} | set(config)
        assert action.dest in fields, flag
    with pytest.raises(SystemExit):
        parse_args(["--train-data", "a.tar", "--dataset-type", "synthetic"])


def test_schedules_match_open_clip_train():
    def ours(kind, **kwargs):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        schedule = LearningRateSchedule(optimizer, 5, 40, kind, **kwargs)
        values = []
        for step in range(40):
            schedule(step)
            values.append(optimizer.param_groups[0]["lr"])
        return values

    def theirs(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        adjust = make(optimizer)
        return [adjust(step) for step in range(40)]

    assert ours("cosine") == pytest.approx(theirs(lambda o: cosine_lr(o, 0.1, 5, 40)))
    assert ours("const") == pytest.approx(theirs(lambda o: const_lr(o, 0.1, 5, 40)))
    assert ours("const-cooldown", cooldown_steps=12, cooldown_power=2.0, cooldown_end=0.01) == pytest.approx(
        theirs(lambda o: const_lr_cooldown(o, 0.1, 5, 40, 12, 2.0, 0.01)))
    assert ours("none") == [0.1] * 40


def test_upsampling_factors_weight_the_sources(tmp_path):
    spec = "a/{0..1}.tar::b/{0..2}.tar"
    assert shard_weights(spec, "1::0.5") == [1, 1, 0.5, 0.5, 0.5]
    stream = ShardStream([f"s{i}.tar" for i in range(5)], dict, 4, 1, resampled=True,
                         weights=shard_weights(spec, "1::0"))
    drawn = {url for cycle in range(20) for url in stream._shard_order(cycle, 0, 1)}
    assert drawn == {"s0.tar", "s1.tar"}
    with pytest.raises(SystemExit):
        parse_args(["--train-data", spec, "--train-data-upsampling-factors", "1::2"])  # needs --dataset-resampled


def test_model_flags_build_what_open_clip_builds(micro_world):
    config = parse_args(["--train-data", str(micro_world / "train" / "000000.tar"), "--model", "Test-Micro",
                         "--force-quick-gelu", "--force-patch-dropout", "0.25", "--force-image-size", "48",
                         "--image-mean", "0.1", "0.2", "0.3", "--aug-cfg", "scale=(0.5, 1.0)", "--lock-image",
                         "--lock-image-unlocked-groups", "1", "--opt", "timm/sgd", "--momentum", "0.8",
                         "--precision", "fp32"])
    task = build_task(config, DistributedEnv())
    model = task.model
    assert model.memclip_spec.model_cfg["quick_gelu"] and model.visual.image_size == (48, 48)
    assert model.visual.patch_dropout.prob == 0.25
    assert open_clip.get_model_preprocess_cfg(model)["mean"] == (0.1, 0.2, 0.3)
    assert "RandomResizedCrop(size=(48, 48), scale=(0.5, 1.0)" in str(task.preprocess_train)
    reference = memclip.create_model("Test-Micro", force_image_size=48)  # open_clip's lock on a fresh model
    reference.lock_image_tower(unlocked_groups=1)
    assert [p.requires_grad for p in model.visual.parameters()] == \
        [p.requires_grad for p in reference.visual.parameters()]
    assert model.visual.proj.requires_grad and not model.visual.conv1.weight.requires_grad
    assert model.token_embedding.weight.requires_grad  # the text tower still trains (LiT)
    optimizer = create_optimizer(config, model)
    assert type(optimizer).__name__ == "SGD" and optimizer.param_groups[0]["momentum"] == 0.8


def test_distributed_flags_reach_the_process_group(monkeypatch):
    calls = {}
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.update(kwargs))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = distributed.init_distributed("cpu", "tcp://10.0.0.1:2345", "gloo")
    assert calls == {"backend": "gloo", "init_method": "tcp://10.0.0.1:2345", "rank": 1, "world_size": 2}
    assert env.rank == 1 and env.world_size == 2
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or "compiled")
    config = parse_args(["--train-data", "a.tar", "--torchcompile"])
    model = torch.nn.Linear(2, 2)
    assert wrap_for_training(config, DistributedEnv(), model) == "compiled" and compiled == [model]


@pytest.mark.slow
def test_siglip_logit_distillation_and_checkpoint_flags_in_real_runs(micro_world, tmp_path):
    args = train_args(micro_world, tmp_path, "siglip", "--siglip", "--delete-previous-checkpoint", "--log-local",
                      "--debug", "--lr-scheduler", "const-cooldown", "--epochs-cooldown", "1", "--save-most-recent")
    assert main(args) == 0
    run = tmp_path / "siglip"
    assert not (run / "checkpoints" / "epoch_1.pt").exists() and (run / "checkpoints" / "epoch_2.pt").exists()
    assert (run / "out-0.log").exists() and "DEBUG" in (run / "out-0.log").read_text()
    final = memclip.create_model(str(run / "final"))
    assert final.logit_bias is not None and final.logit_bias.item() != -10.0  # trained from its SigLIP init
    teacher = tmp_path / "teacher"
    memclip.save_pretrained(memclip.create_model("Test-Micro"), teacher)
    args = train_args(micro_world, tmp_path, "dist", "--distill-model", "Test-Micro", "--distill-pretrained",
                      str(teacher), "--pretrained", str(teacher), "--epochs", "1", "--precision", "pure_bf16",
                      "--lock-text")
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "dist" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["loss_distill"] > 0 and r["loss_contrastive"] > 0 for r in train)
    saved = load_file(tmp_path / "dist" / "final" / "open_clip_model.safetensors")
    assert saved["visual.conv1.weight"].dtype == torch.bfloat16  # pure_bf16: weights trained and saved in bf16
    student = memclip.create_model(str(tmp_path / "dist" / "final"), precision="pure_bf16")
    start = memclip.create_model(str(teacher), precision="pure_bf16")
    assert torch.equal(student.token_embedding.weight, start.token_embedding.weight)  # --lock-text
    assert not torch.equal(student.visual.conv1.weight, start.visual.conv1.weight)
