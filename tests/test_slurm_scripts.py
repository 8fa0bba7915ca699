"""The SLURM recipes: syntax, dry runs, the geometry they derive, and requeue on preemption."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

SLURM = Path(__file__).resolve().parents[1] / "scripts" / "slurm"
SCRIPTS = ["distill.sbatch", "finetune.sbatch", "eval.sbatch"]
REQUIRED = {
    "distill.sbatch": {"TRAIN_DATA": "/d/{000000..000009}.tar", "LOGS": "/runs"},
    "finetune.sbatch": {"TRAIN_DATA": "/d/{000000..000009}.tar", "LOGS": "/runs", "STUDENT": "/runs/d/final"},
    "eval.sbatch": {"EVAL_ROOT": "/data/eval", "OUT": "/results",
                    "MODELS": "ViT-B-16-quickgelu:openai ViT-B-16-mem:/r/final"},
}


def fake_python(folder, signals: bool) -> str:
    """A PATH whose ``python`` answers ``-m torch.distributed.run --help`` like a torchrun with or without
    --signals-to-handle (torch 2.9 and later, or before)."""
    folder.mkdir(exist_ok=True)
    flag = "  --signals-to-handle SIGNALS_TO_HANDLE" if signals else ""
    (folder / "python").write_text(f"#!/bin/sh\necho 'usage: torchrun [--nnodes NNODES]'\necho '{flag}'\n")
    (folder / "python").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def dry_run(script, **env):
    """(exit code, the printed commands as shell words re-joined with spaces, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SLURM / script)], env=dict(clean, DRY_RUN="1", **env),
                            capture_output=True, text=True)
    commands = "\n".join("+ " + " ".join(shlex.split(line[2:])) for line in result.stdout.splitlines()
                         if line.startswith("+ "))
    return result.returncode, commands, result.stderr


@pytest.mark.parametrize("script", SCRIPTS + ["common.sh"])
def test_syntax(script):
    subprocess.run(["bash", "-n", str(SLURM / script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_settings_are_named(script):
    for missing in list(REQUIRED[script]) + ["ACCOUNT"]:
        env = dict(REQUIRED[script], ACCOUNT="acct")
        env.pop(missing)
        code, _, err = dry_run(script, **env)
        assert code == 2 and f"set {missing}:" in err, (missing, err)


def test_distill_submits_itself_and_prints_the_thesis_command():
    code, out, _ = dry_run("distill.sbatch", ACCOUNT="acct", NODES="2", **REQUIRED["distill.sbatch"])
    assert code == 0
    submit, launch = [line for line in out.splitlines() if line.startswith("+ ")]
    assert "sbatch --account acct --nodes 2 --gpus-per-node 4" in submit and "distill.sbatch" in submit
    for flag in ("--distill", "--model ViT-B-16-mem", "--pretrained openai", "--batch-size 20", "--accum-freq 4",
                 "--lr 5e-4", "--wd 0.1", "--epochs 38", "--warmup 1000", "--precision amp_bf16",
                 "--grad-checkpointing", "--distill-loss cosine", "--resume latest", "--logs-dir /runs"):
        assert flag in launch, flag
    assert launch.startswith("+ srun --ntasks-per-node 4")


def test_inside_a_job_the_geometry_comes_from_the_allocation(tmp_path):
    env = dict(REQUIRED["finetune.sbatch"], SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="8",
               LAUNCHER="torchrun", MASTER_ADDR="node01", PATH=fake_python(tmp_path / "bin", signals=True))
    code, out, _ = dry_run("finetune.sbatch", **env)
    assert code == 0
    (launch,) = [line for line in out.splitlines() if line.startswith("+ ")]
    assert "--nnodes 2 --nproc_per_node 8" in launch and "--rdzv_endpoint node01:24242" in launch
    assert "SIGUSR1" in launch
    # the thesis's recipe by default: 77 tokens (no stretch), text frozen, warmup 1000 (Table 4.1)
    for flag in ("--long-short-alpha 0.8", "--pretrained /runs/d/final", "--trainable memory,visual ",
                 "--lr 1e-5", "--batch-size 32", "--epochs 10", "--warmup 1000", "--name finetune-vit-b-16-mem "):
        assert flag in launch, flag
    assert "--text-context-length" not in launch and "--text-pos-stretch" not in launch
    code, out, _ = dry_run("finetune.sbatch", **dict(env, RECIPE="longclip248"))
    for flag in ("--trainable memory,visual,text", "--text-context-length 248 --text-pos-stretch longclip",
                 "--name finetune-vit-b-16-mem-longclip248"):
        assert flag in out, flag
    code, _, err = dry_run("finetune.sbatch", **dict(env, RECIPE="248"))
    assert code == 2 and "RECIPE=248: thesis" in err


@pytest.mark.parametrize("signals", [True, False], ids=["torch-2.9+", "older-torch"])
def test_torchrun_gets_signals_to_handle_only_when_it_takes_it(tmp_path, signals):
    env = dict(REQUIRED["finetune.sbatch"], SLURM_JOB_ID="4242", LAUNCHER="torchrun",
               PATH=fake_python(tmp_path / "bin", signals))
    code, out, err = dry_run("finetune.sbatch", **env)
    assert code == 0
    (launch,) = [line for line in out.splitlines() if line.startswith("+ ")]
    assert ("--signals-to-handle SIGTERM,SIGINT,SIGUSR1" in launch) == signals
    assert ("no --signals-to-handle" in err) == (not signals) and ("LAUNCHER=srun" in err) == (not signals)


def test_shards_come_from_the_converter_output(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val-1k").mkdir()
    (tmp_path / "val-1k" / "sizes.json").write_text("{}")
    (tmp_path / "conversion.json").write_text("{}")
    env = dict(ACCOUNT="acct", LOGS="/runs", SHARDS=str(tmp_path))
    code, out, _ = dry_run("distill.sbatch", **env)
    assert code == 0 and f"--train-data {tmp_path}/train " in out and f"--val-data {tmp_path}/val-1k" in out
    code, _, err = dry_run("distill.sbatch", **dict(env, SHARDS=str(tmp_path / "train")))
    assert code == 2 and "has no conversion.json" in err


def test_eval_runs_retrieval_then_segmentation():
    code, out, _ = dry_run("eval.sbatch", ACCOUNT="acct", **REQUIRED["eval.sbatch"])
    assert code == 0
    submit, retrieval, segmentation = [line for line in out.splitlines() if line.startswith("+ ")]
    assert "--gpus-per-node 1" in submit
    assert "--model ViT-B-16-quickgelu --pretrained openai --model ViT-B-16-mem --pretrained /r/final" in retrieval
    assert "--dataset urban1k --data-root /data/eval/urban1k" in retrieval
    assert "--dataset sharegpt4v-10k --data-root /data/eval/sharegpt4v" in retrieval
    assert "--dataset voc20 --data-root /data/eval/VOC2012" in segmentation and "--method sclip" in segmentation


def test_preempted_runs_are_requeued(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/scontrol.log\n")
    (fake / "scontrol").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_JOB_ID="77")
    script = f"source {SLURM}/common.sh; requeue_if_preempted 3"
    assert subprocess.run(["bash", "-c", script], env=env).returncode == 0
    assert (tmp_path / "scontrol.log").read_text().strip() == "requeue 77"
    failed = subprocess.run(["bash", "-c", f"source {SLURM}/common.sh; requeue_if_preempted 1"], env=env)
    assert failed.returncode == 1
