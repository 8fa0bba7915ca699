"""Training with sparse value gradients (--memory sparse_value_grad=true): RowwiseAdamW over the rows read, with
accumulation, clipping, the fp16 scaler's path, resumes that switch between AdamW and RowwiseAdamW, and DDP."""
import functools
import json
import math
import subprocess

import pytest
import torch
import torch.multiprocessing as mp
from sparse_values_worker import VALUES, build, train_step, worker
from train_helpers import PYTHON, train_args

import memclip
from memclip_train import main as main_module
from memclip_train import trainer as trainer_module
from memclip_train.checkpoints import TrainState, load_checkpoint
from memclip_train.error_reporting import UserError
from memclip_train.data.loaders import RunData
from memclip_train.distributed import DistributedEnv
from memclip_train.main import create_optimizer, main
from memclip_train.params import parse_args
from memclip_train.run_logger import RunLogger
from memclip_train.tasks.distill import DistillTask
from memclip_train.trainer import Trainer
from memory_layers import RowwiseAdamW

SPARSE = ("--memory", "sparse_value_grad=true")
# 3 steps an epoch of 2 micro-batches of 8 (the contrastive task's feature-cached accumulation), clipped hard; the
# values at their own lr with weight decay, so that a row stepped when it should not be would show.
COMMON = ("--epochs", "2", "--batch-size", "8", "--accum-freq", "2", "--train-num-samples", "48",
          "--grad-clip-norm", "0.05", "--value-lr", "0.02", "--memory", "value_weight_decay=0.1")
VALUE_DECAY = 1 - 0.02 * 0.1


def memory_args(world, logs, name, *extra):
    args = train_args(world, logs, name, *extra)
    args[args.index("--model") + 1] = "Test-Micro-mem"
    return args


def train_losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if record["kind"] == "train"]


def final_weights(run_dir):
    return memclip.create_model(str(run_dir / "final")).state_dict()


def assert_weights_close(got, want, what):
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=f"{what}: {key}")


@pytest.fixture(scope="module")
def dense_run(micro_world, tmp_path_factory):
    logs = tmp_path_factory.mktemp("dense")
    assert main(memory_args(micro_world, logs, "run", *COMMON)) == 0
    return logs / "run"


@pytest.fixture(scope="module")
def sparse_run(micro_world, tmp_path_factory):
    logs = tmp_path_factory.mktemp("sparse")
    assert main(memory_args(micro_world, logs, "run", *COMMON, *SPARSE)) == 0
    return logs / "run"


def test_the_optimizer_is_rowwise_adamw_only_for_sparse_tables_and_keeps_the_value_group():
    """The values keep their own lr (--value-lr) and no weight decay (the memory config's 0, not --wd)."""
    for extra, kind in (((), torch.optim.AdamW), (SPARSE, RowwiseAdamW)):
        config = parse_args(["--train-data", "a.tar", "--model", "Test-Micro-mem", "--wd", "0.2", "--value-lr", "0.02",
                             *extra])
        model = memclip.create_model("Test-Micro-mem", memory=config.model.memory_overrides)
        optimizer = create_optimizer(config, model)
        assert type(optimizer) is kind
        values = next(g for g in optimizer.param_groups if g["name"] == "values")
        assert values["lr"] == 0.02 and values["weight_decay"] == 0.0 and values["fixed_lr"]
        assert next(g for g in optimizer.param_groups if g["name"] == "decay")["weight_decay"] == 0.2
    config = parse_args(["--train-data", "a.tar", "--model", "Test-Micro-mem", "--opt", "timm/sgd", *SPARSE])
    with pytest.raises(UserError, match="--opt timm/sgd cannot step the sparse value gradients"):
        create_optimizer(config, memclip.create_model("Test-Micro-mem", memory=config.model.memory_overrides))


def test_sharded_sparse_values_are_refused_in_one_line(micro_world, tmp_path, capsys):
    args = memory_args(micro_world, tmp_path, "refused", *SPARSE, "--memory", "values_parallel_group_size=2")
    with pytest.raises(SystemExit):
        main(args)
    assert "sparse_value_grad=True: is not supported with values_parallel_group_size > 1" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_sparse_values_train_as_adamw_when_every_row_is_read(dense_run, sparse_run):
    """64 slots, each step reading thousands of rows: every row is read every step, so the lazy update is AdamW's.
    (A trainer that built AdamW for sparse gradients would fail; one that dropped micro-batches, clipped without the
    sparse rows or averaged them wrongly would differ.)"""
    assert "RowwiseAdamW steps only the rows each step reads" in (sparse_run / "out.log").read_text()
    assert_weights_close(final_weights(sparse_run), final_weights(dense_run), "sparse against dense")
    losses = train_losses(sparse_run)
    assert losses[-1] < losses[0], "the loss falls"
    torch.testing.assert_close(losses, train_losses(dense_run), rtol=1e-4, atol=0, msg="the loss falls as AdamW's")
    state = load_checkpoint(sparse_run / "checkpoints" / "epoch_2.pt")["optimizer"]["state"]
    assert sorted({int(s["step"]) for s in state.values()}) == [6]


def test_accumulated_micro_batches_give_the_full_batch_sparse_gradient(tmp_path):
    """The per-sample path of --accum-freq (distillation): two micro-batches give the one-batch sparse gradient, and
    the trainer coalesces it after each backward (autograd concatenates the rows of both sharing layers and of both
    micro-batches: without it the gradient holds 4 rows per slot read)."""
    torch.manual_seed(1)
    images = torch.randn(8, 3, 32, 32)
    teacher = memclip.create_model("Test-Micro").state_dict()
    grads = []
    for accum in (1, 2):
        torch.manual_seed(0)
        student = memclip.create_model("Test-Micro-mem", memory={"sparse_value_grad": True})
        reference = memclip.create_model("Test-Micro")
        reference.load_state_dict(teacher)
        memclip.freeze_except_memory(student)
        task = DistillTask(student, reference, None, None, None, DistributedEnv())
        config = parse_args(["--train-data", "a.tar", "--model", "Test-Micro-mem", "--precision", "fp32",
                             "--batch-size", str(8 // accum), "--accum-freq", str(accum), *SPARSE])
        optimizer = create_optimizer(config, student)
        trainer = Trainer(config, DistributedEnv(), task, student, optimizer, None, RunData(None, None, 4, 32), None,
                          tmp_path, RunLogger(tmp_path, config, is_master=False), TrainState())
        trainer._accumulate_gradients([{"image": images[i * 8 // accum:(i + 1) * 8 // accum]} for i in range(accum)])
        grad = dict(student.named_parameters())[VALUES].grad
        assert grad.is_sparse and grad.is_coalesced()
        grads.append(grad)
    assert torch.equal(grads[1].indices(), grads[0].indices())
    torch.testing.assert_close(grads[1].values(), grads[0].values(), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_a_non_finite_sparse_gradient_stops_the_run_and_keeps_the_last_good_checkpoint(micro_world, tmp_path,
                                                                                        monkeypatch, caplog):
    """A NaN in the value table's sparse gradient only (the loss of that step is finite): RowwiseAdamW writes it into
    the rows read, the NaN check stops the run at the next check with its one message, and the checkpoint before it
    is the one kept."""
    original, backwards = trainer_module.coalesce_sparse_grads, {"n": 0}

    def poisoned(parameters):
        original(parameters)
        backwards["n"] += 1
        if backwards["n"] == 3:
            for param in parameters:
                param.grad = param.grad * float("nan")

    monkeypatch.setattr(trainer_module, "coalesce_sparse_grads", poisoned)
    args = memory_args(micro_world, tmp_path, "nan", "--save-every-n-steps", "2", "--log-every-n-steps", "1", *SPARSE)
    assert main(args) == 2
    folder = tmp_path / "nan" / "checkpoints"
    assert "non-finite at step 4" in caplog.text and "Stopping: the last good checkpoint, with finite weights and a " \
        f"finite loss, is {folder / 'epoch_latest.pt'} (step 2)" in caplog.text
    kept = load_checkpoint(folder / "epoch_latest.pt")
    assert kept["step"] == 2 and all(torch.isfinite(v).all() for v in kept["state_dict"].values()
                                     if v.is_floating_point())
    assert not (tmp_path / "nan" / "final").exists()


@pytest.mark.slow
def test_a_sparse_run_resumes_exactly(micro_world, tmp_path, sparse_run, monkeypatch):
    """Stopped after epoch 1 and resumed with --resume latest: RowwiseAdamW's moments and step counts come back
    exactly, so the run ends bit-identical to the straight one, optimizer state included."""
    original = Trainer.train_epoch

    def stop_at_the_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", stop_at_the_second_epoch)
        assert main(memory_args(micro_world, tmp_path, "again", *COMMON, *SPARSE)) == 130
    assert main(memory_args(micro_world, tmp_path, "again", *COMMON, *SPARSE, "--resume", "latest")) == 0
    for key, value in final_weights(sparse_run).items():
        assert torch.equal(final_weights(tmp_path / "again")[key], value), key
    got = load_checkpoint(tmp_path / "again" / "checkpoints" / "epoch_2.pt")["optimizer"]["state"]
    want = load_checkpoint(sparse_run / "checkpoints" / "epoch_2.pt")["optimizer"]["state"]
    assert got.keys() == want.keys()
    for index, state in want.items():
        for name, value in state.items():
            assert torch.equal(got[index][name], value), f"optimizer state {index} {name}"


@pytest.mark.slow
def test_torchcompile_trains_sparse_values_without_recompiling(micro_world, tmp_path, monkeypatch):
    """--torchcompile with sparse value gradients: the table's read runs outside the graph (AOTAutograd cannot trace
    a sparse gradient), which splits each memory block's frame: a fixed number of graphs and breaks, all made by
    the second step (its resumed block frame is compiled once more for the blocks whose MLP is no memory); later
    steps compile nothing. (aot_eager stands in for inductor, which would need minutes of C++ compilation here: graph
    breaks and recompiles are dynamo's, whatever the backend.)"""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    seen, original = [], Trainer.step

    def counted(self, micro):
        terms = original(self, micro)
        seen.append((counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())))
        return terms

    monkeypatch.setattr(Trainer, "step", counted)
    args = memory_args(micro_world, tmp_path, "compiled", "--epochs", "1", "--torchcompile", *SPARSE)
    assert main(args) == 0
    assert len(seen) == 6 and seen[0][0] > 0
    assert all(count == seen[1] for count in seen[2:]), f"recompiled after the second step: {seen}"
    assert seen[-1][0] <= 16 and seen[-1][1] <= 16, f"a graph-break storm: (graphs, breaks) {seen}"
    losses = train_losses(tmp_path / "compiled")
    assert all(map(math.isfinite, losses))


@pytest.mark.slow
def test_rows_a_step_does_not_read_do_not_move(micro_world, tmp_path):
    """1,024 slots and 4 images a step: about a third of the rows go unread each step. After step 1 each row is
    either read (sparse == AdamW) or not (sparse unchanged, AdamW decays it by 1 - value_lr * value_weight_decay);
    at step 2 some rows stay bit-identical under RowwiseAdamW, none under AdamW (momentum and decay move them)."""
    narrow = ("--epochs", "2", "--batch-size", "4", "--train-num-samples", "4", "--warmup", "1", "--value-lr", "0.02",
              "--memory", "value_weight_decay=0.1", "--memory", "n_keys=32")
    steps = {}
    for name, extra in (("dense", ()), ("sparse", SPARSE)):
        assert main(memory_args(micro_world, tmp_path, name, *narrow, *extra)) == 0
        steps[name] = [load_checkpoint(tmp_path / name / "checkpoints" / f"epoch_{n}.pt")["state_dict"]
                       for n in (1, 2)]
    dense, sparse = steps["dense"], steps["sparse"]
    for key, value in dense[0].items():
        if not key.endswith(".mlp.values.weight"):  # the shared table, under each layer's name
            torch.testing.assert_close(sparse[0][key], value, rtol=1e-5, atol=1e-6, msg=key)
    read = (sparse[0][VALUES] - dense[0][VALUES]).abs().amax(1) < 1e-6
    assert 0 < int(read.sum()) < 1024
    torch.testing.assert_close(dense[0][VALUES][~read], sparse[0][VALUES][~read] * VALUE_DECAY)
    unread_at_step_2 = (sparse[1][VALUES] == sparse[0][VALUES]).all(1)
    assert 0 < int(unread_at_step_2.sum()) < 1024
    assert not (dense[1][VALUES] == dense[0][VALUES]).all(1).any()


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [((), SPARSE), (SPARSE, ())])
def test_a_resume_switches_between_adamw_and_rowwise_adamw(micro_world, tmp_path, dense_run, monkeypatch, first,
                                                           then):
    """Stopped after epoch 1 and resumed with the other gradient kind: AdamW's state goes on in RowwiseAdamW (and
    back), and the run ends where the straight dense run does."""
    original = Trainer.train_epoch

    def stop_at_the_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", stop_at_the_second_epoch)
        assert main(memory_args(micro_world, tmp_path, "switch", *COMMON, *first)) == 130  # Ctrl-C after epoch 1
    assert main(memory_args(micro_world, tmp_path, "switch", *COMMON, *then, "--resume", "latest")) == 0
    assert "resumed from" in (tmp_path / "switch" / "out.log").read_text()
    assert_weights_close(final_weights(tmp_path / "switch"), final_weights(dense_run), "switched at the resume")
    state = load_checkpoint(tmp_path / "switch" / "checkpoints" / "epoch_2.pt")["optimizer"]["state"]
    assert sorted({int(s["step"]) for s in state.values()}) == [6], "the moments and step counts went on"


@pytest.mark.slow
def test_the_grad_scaler_path_gives_the_same_sparse_run(micro_world, tmp_path, sparse_run, monkeypatch):
    """--precision amp's path (scaled loss, unscale_ before the clip, scaler.step) on the CPU: a power-of-two scale
    is exact in fp32, so the run equals the unscaled one."""
    monkeypatch.setattr(main_module, "create_scaler", lambda config, env: torch.amp.GradScaler("cpu",
                                                                                               init_scale=2.0 ** 10))
    assert main(memory_args(micro_world, tmp_path, "scaled", *COMMON, *SPARSE)) == 0
    assert "scaler" in load_checkpoint(tmp_path / "scaled" / "checkpoints" / "epoch_2.pt")
    assert_weights_close(final_weights(tmp_path / "scaled"), final_weights(sparse_run), "scaled against unscaled")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_match_one_with_sparse_values(tmp_path, micro_configs):
    """Trainer.step with --accum-freq 2 and --grad-clip-norm: DDP ignores the sparse table (its reducer fails on
    it), rank 0's table is broadcast, and the trainer's average gives each rank the one-process gradient of the
    doubled batch, rows included, one row per slot; the step leaves every rank with the one-process weights."""
    torch.manual_seed(1)
    batch = {"image": torch.randn(8, 3, 32, 32), "text": memclip.get_tokenizer("Test-Micro")(
        [f"a {c} star" for c in ("red", "blue", "green", "pink", "black", "white", "grey", "cyan")])}
    single = train_step(build(DistributedEnv()), DistributedEnv(), batch, tmp_path)
    assert single["optimizer"] == "RowwiseAdamW" and single["one_row_per_slot"]
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(micro_configs), batch, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["optimizer"] == "RowwiseAdamW" and result["one_row_per_slot"]
        assert sorted(result["ignored"]) == [VALUES, VALUES.replace(".1.", ".2.")], "the shared table, every alias"
        assert torch.equal(result["rows"], single["rows"]), "the rows any rank read"
        assert result["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"rank {rank} {name}")
        for name, weight in single["weights"].items():
            torch.testing.assert_close(result["weights"][name], weight, rtol=1e-4, atol=1e-6, msg=f"rank {rank} {name}")


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_trains_sparse_values_on_the_cpu(micro_world, tmp_path, subprocess_environment):
    """Several steps of DDP with --accum-freq 2: every parameter, the logit scale included, takes part in each step's
    last backward (else DDP stops at the next step: it never finished reducing the previous one)."""
    args = memory_args(micro_world, tmp_path, "ddp", "--epochs", "1", "--batch-size", "8", "--accum-freq", "2",
                       "--warmup", "1", *SPARSE)
    args[args.index("--logs")] = "--logs-dir"  # torchrun's own --logs-specs makes --logs ambiguous
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
               "-m", "memclip_train.main"] + args
    result = subprocess.run(command, env=subprocess_environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RowwiseAdamW" in result.stderr and (tmp_path / "ddp" / "final" / "memclip_config.json").exists()
