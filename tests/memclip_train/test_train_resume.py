"""Resuming by samples seen (memclip_train.resume_plan): a position carried into another --batch-size when it
divides evenly, and a refusal naming what changed when it cannot be exact (unless --resume-with-changes)."""
import json

import pytest
import torch
from train_helpers import train_args

from memclip_train.checkpoints import TrainState, load_checkpoint
from memclip_train.error_reporting import UserError
from memclip_train.data.samples import SampleDecoder
from memclip_train.main import main
from memclip_train.resume_plan import RunShape, plan_resume
from memclip_train.schedule import LearningRateSchedule
from memclip_train.tasks.contrastive import ContrastiveTask

STREAM = (("seed", 0), ("shards", "abc:2"), ("shuffle_buffer", 1000))


def shape(**changes):
    values = dict(task="contrastive", batch_size=16, world_size=1, workers=1, accum_freq=1, samples_per_epoch=256,
                  stream=STREAM)
    return RunShape(**{**values, **changes})


def stopped_at(batch, batch_size=16, epoch=0):
    """The state of a run stopped after ``batch`` batches of one worker in ``epoch`` (16 batches an epoch)."""
    position = {"consumed": {"0": batch * batch_size + 3}, "batches": {"0": batch}}
    steps = epoch * 16 + batch
    return TrainState(epoch, batch, steps, position, steps * batch_size)


def test_the_issue_case_is_refused_naming_the_batch_size():
    # Stopped at batch 9 of 16, resumed with a batch twice as big: 144 samples are not a whole number of batches.
    with pytest.raises(UserError, match="cannot continue exactly from epoch 0, 144 of its 256 samples trained: "
                                        "--batch-size 16 -> 32"):
        plan_resume(shape(), shape(batch_size=32), stopped_at(9), "ckpt.pt", accept_changes=False)


def test_a_position_that_divides_evenly_is_carried_over_exactly():
    plan = plan_resume(shape(), shape(batch_size=32), stopped_at(8), "ckpt.pt", accept_changes=False)
    assert plan.exact and plan.changes == ["--batch-size 16 -> 32"]
    assert plan.state.batch_in_epoch == 4 and plan.state.samples_seen == 128 and plan.state.step == 8
    assert plan.state.stream_position == {"consumed": {"0": 131}, "batches": {"0": 4}}, "the same samples consumed"
    smaller = plan_resume(shape(), shape(batch_size=8), stopped_at(9), "ckpt.pt", accept_changes=False)
    assert smaller.exact and smaller.state.batch_in_epoch == 18


@pytest.mark.parametrize("change,named", [
    ({"workers": 2}, "--workers 1 -> 2"),
    ({"world_size": 2, "batch_size": 8}, "processes (world size) 1 -> 2"),
    ({"samples_per_epoch": 192}, "samples per epoch (the data, or --train-num-samples) 256 -> 192"),
    ({"stream": (("seed", 0), ("shards", "def:2"), ("shuffle_buffer", 1000))}, "--train-data (its shard files)"),
    ({"stream": (("seed", 1), ("shards", "abc:2"), ("shuffle_buffer", 1000))}, "--seed 0 -> 1"),
])
def test_a_changed_stream_mid_epoch_is_refused_naming_it(change, named):
    with pytest.raises(UserError, match=__import__("re").escape(named)):
        plan_resume(shape(), shape(**change), stopped_at(8), "ckpt.pt", accept_changes=False)


def test_at_an_epoch_boundary_the_next_epoch_is_read_with_the_new_settings():
    plan = plan_resume(shape(), shape(workers=2), stopped_at(0, epoch=1), "ckpt.pt", accept_changes=False)
    assert plan.exact and plan.state.samples_seen == 256 and plan.state.stream_position == {}
    with pytest.raises(UserError, match="samples per epoch"):  # the run's length in samples changed
        plan_resume(shape(), shape(samples_per_epoch=128), stopped_at(0, epoch=1), "ckpt.pt", accept_changes=False)


def test_a_changed_task_is_refused_even_with_the_flag():
    with pytest.raises(UserError, match="holds a --distill run; this command is --long-short-alpha.*--pretrained"):
        plan_resume(shape(task="distill"), shape(task="long_short"), stopped_at(8), "ckpt.pt", accept_changes=True)


def test_with_the_flag_an_inexact_resume_keeps_the_samples_seen():
    plan = plan_resume(shape(), shape(batch_size=32), stopped_at(9), "ckpt.pt", accept_changes=True)
    assert not plan.exact and plan.state.samples_seen == 144 and plan.state.batch_in_epoch == 4
    assert plan.state.stream_position == {"consumed": {}, "batches": {"0": 4}}, "the epoch restarts for its rest"
    workers = plan_resume(shape(), shape(workers=2), stopped_at(9), "ckpt.pt", accept_changes=True)
    assert workers.state.batch_in_epoch == 8 and workers.state.stream_position["batches"] == {"0": 4, "1": 4}


# ---------------------------------------------------------------------------------------------------- end to end
def interrupted_run(micro_world, tmp_path, monkeypatch, name, stop_after, *extra):
    """A run (batch 8: 12 batches an epoch) killed after step ``stop_after``, whose last checkpoint is that step."""
    original = ContrastiveTask.loss
    calls = {"n": 0}

    def crash(self, features, batch):
        calls["n"] += 1
        if calls["n"] > stop_after:
            raise KeyboardInterrupt
        return original(self, features, batch)

    args = train_args(micro_world, tmp_path, name, "--batch-size", "8", "--save-every-n-steps", str(stop_after),
                      *extra)
    with monkeypatch.context() as patch:
        patch.setattr(ContrastiveTask, "loss", crash)
        assert main(args) == 130  # Ctrl-C: one line naming the checkpoint to resume from
    assert load_checkpoint(tmp_path / name / "checkpoints" / "epoch_latest.pt")["step"] == stop_after
    return args


def with_flag(args, flag, value):
    """``args`` with the value of ``flag``'s last occurrence (the one argparse keeps) replaced."""
    args = list(args)
    args[len(args) - 1 - args[::-1].index(flag) + 1] = value
    return args


@pytest.mark.slow
def test_a_resume_with_another_batch_size_refuses_or_continues_by_samples(micro_world, tmp_path, monkeypatch, capsys):
    args = interrupted_run(micro_world, tmp_path, monkeypatch, "bigger", 9)
    bigger = with_flag(args, "--batch-size", "16") + ["--resume", "latest"]
    assert main(bigger) == 2
    err = capsys.readouterr().err
    assert "cannot continue exactly from epoch 0, 72 of its 96 samples trained: --batch-size 8 -> 16" in err, err
    assert main(bigger + ["--resume-with-changes"]) == 0
    final = load_checkpoint(tmp_path / "bigger" / "checkpoints" / "epoch_2.pt")
    # 72 samples at batch 8, then the rest of epoch 0 at batch 16 (64 of its samples counted done, whole batches
    # below 72: two batches more), and epoch 1: the rest of the epoch is trained, not skipped.
    assert final["samples_seen"] == 72 + 32 + 96 and final["epoch"] == 2


@pytest.mark.slow
def test_an_exact_resume_with_another_batch_size_trains_each_sample_of_the_epoch_once(micro_world, tmp_path,
                                                                                     monkeypatch):
    seen = []
    original = SampleDecoder.__call__

    def record(self, raw):
        decoded = original(self, raw)
        seen.append((self.epoch, raw["__key__"]))
        return decoded

    monkeypatch.setattr(SampleDecoder, "__call__", record)
    straight = train_args(micro_world, tmp_path, "straight", "--batch-size", "8")
    assert main(straight) == 0
    expected, seen[:] = list(seen), []
    args = interrupted_run(micro_world, tmp_path, monkeypatch, "exact", 8)
    before, seen[:] = list(seen), []
    assert main(with_flag(args, "--batch-size", "16") + ["--resume", "latest"]) == 0
    trained = before[:64] + seen
    assert sorted(trained) == sorted(expected), "every sample of each epoch trained once, none skipped or repeated"
    final = load_checkpoint(tmp_path / "exact" / "checkpoints" / "epoch_2.pt")
    assert final["samples_seen"] == 192 and final["step"] == 8 + 2 + 6
    rows = [json.loads(line) for line in (tmp_path / "exact" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}
    # Step 10 is the second step after the resume: 64 + 16 samples seen before it, position 5 of the 12 steps that
    # a run at batch 16 has (not position 9, the step count, which would put the schedule far ahead).
    schedule = LearningRateSchedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3), 2, 12)
    assert lr[10] == pytest.approx(schedule.lr(1e-3, 5))


@pytest.mark.parametrize("change,named", [
    (["--model", "Test-Micro-mem", "--memory", "knn=2"], "memory.knn 4 -> 2"),
    (["--long-short-alpha", "0.8"], "holds a contrastive training run; this command is --long-short-alpha"),
    (["--workers", "2"], "--workers 1 -> 2"),
])
def test_a_resume_that_changes_the_model_task_or_workers_is_refused_naming_it(micro_world, tmp_path, monkeypatch,
                                                                              capsys, change, named):
    model = ["--model", "Test-Micro-mem"] if "Test-Micro-mem" in change else []
    args = interrupted_run(micro_world, tmp_path, monkeypatch, "changed", 4, *model)
    capsys.readouterr()  # the interrupted run's own line
    resumed = args + ["--resume", "latest"]
    for index in range(0, len(change), 2):
        flag, value = change[index], change[index + 1]
        resumed = with_flag(resumed, flag, value) if flag in resumed else resumed + [flag, value]
    assert main(resumed) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0], err[-2000:]
