"""Data parallelism: two gloo processes match one process on the same global batch; torchrun runs on the CPU."""
import subprocess

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import PYTHON, train_args
from distributed_worker import build, one_step, worker

import memclip
from memclip_train.distributed import DistributedEnv, ranks_from_env


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["contrastive", "distill"])
def test_two_processes_match_one(kind, tmp_path, micro_configs):
    torch.manual_seed(1)
    batch = {"image": torch.randn(8, 3, 32, 32), "text": memclip.get_tokenizer("Test-Micro")(
        [f"a {c} star" for c in ("red", "blue", "green", "pink", "black", "white", "grey", "cyan")])}
    teacher_state = memclip.create_model("Test-Micro").state_dict()
    single = build(kind, DistributedEnv(), teacher_state)
    single_loss, single_grads = one_step(single, single.model, batch)

    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(micro_configs), kind, batch, teacher_state, str(out)),
             nprocs=2, join=True)
    result = torch.load(out, weights_only=True)
    if kind == "contrastive":
        # Every rank computes the loss over the gathered global batch.
        for loss in result["losses"]:
            torch.testing.assert_close(loss, single_loss)
    else:
        # Each rank averages its half; the mean of the halves is the global mean.
        torch.testing.assert_close(torch.stack(result["losses"]).mean(), single_loss)
    assert result["grads"].keys() == single_grads.keys()
    for name, grad in single_grads.items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_rank_variables():
    assert ranks_from_env({}) is None
    assert ranks_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == (2, 0, 4)
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1"}
    assert ranks_from_env(slurm) == (5, 1, 8)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        ranks_from_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_on_the_cpu(micro_world, tmp_path, subprocess_environment):
    args = train_args(micro_world, tmp_path, "ddp", "--epochs", "1", "--batch-size", "8")
    args[args.index("--logs")] = "--logs-dir"
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "memclip_train.main"] + args
    result = subprocess.run(command, env=subprocess_environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0 of 2" in result.stderr or "2 processes" in result.stderr
    assert (tmp_path / "ddp" / "final" / "memclip_config.json").exists()
