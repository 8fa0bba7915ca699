"""Values parallelism in the trainer: 2 gloo processes with the value table sharded train like unsharded ones,
and their checkpoints resume in either layout."""
import subprocess

import pytest
import torch
from train_helpers import PYTHON, train_args

import memclip


def torchrun(world, logs, name, port, environment, *extra):
    args = train_args(world, logs, name, "--epochs", "1", "--batch-size", "8", "--grad-clip-norm", "1.0",
                      "--val-data", str(world / "val" / "000000.tar"), *extra)
    args[args.index("--model") + 1] = "Test-Micro-mem"
    args[args.index("--logs")] = "--logs-dir"
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "memclip_train.main"] + args
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4, msg=key)


def final_weights(run_dir):
    return memclip.create_model(str(run_dir / "final")).state_dict()


@pytest.mark.distributed
@pytest.mark.slow
def test_sharded_values_train_like_unsharded_and_checkpoints_cross_over(micro_world, tmp_path,
                                                                           subprocess_environment):
    shard = ("--memory", "values_parallel_group_size=2")
    log = torchrun(micro_world, tmp_path, "sharded", 29551, subprocess_environment, *shard)
    assert "sharded 1 value table(s) by columns over groups of 2 ranks" in log
    torchrun(micro_world, tmp_path, "plain", 29552, subprocess_environment)
    assert_same_weights(final_weights(tmp_path / "sharded"), final_weights(tmp_path / "plain"))
    checkpoint = torch.load(tmp_path / "sharded" / "checkpoints" / "epoch_latest.pt", weights_only=True)
    table = [v for k, v in checkpoint["state_dict"].items() if k.endswith("values.weight")]
    assert table and all(t.shape == (64, 24) for t in table)  # the full table, under the unsharded key

    # Resume each run in the other layout: unsharded -> sharded and sharded -> unsharded checkpoints.
    resume = ("--epochs", "2", "--resume", "latest")
    log = torchrun(micro_world, tmp_path, "plain", 29553, subprocess_environment, *resume, *shard)
    assert "resumed from" in log and "sharded 1 value table(s)" in log
    log = torchrun(micro_world, tmp_path, "sharded", 29554, subprocess_environment, *resume,
                   "--memory", "values_parallel_group_size=1")
    assert "resumed from" in log and "sharded 1 value table(s)" not in log
    assert_same_weights(final_weights(tmp_path / "plain"), final_weights(tmp_path / "sharded"))
