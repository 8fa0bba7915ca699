"""The SLURM recipes: syntax and shellcheck, dry runs, what a job needs from a bare login shell (a partition, cores
for the loaders, its environment, a log folder, arguments with spaces), the geometry they derive, and requeue."""
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import repo_paths

from memclip_train.params import parse_args

SLURM = repo_paths.REPO / "scripts" / "slurm"
SCRIPTS = ["distill.sbatch", "finetune.sbatch", "eval.sbatch"]
REQUIRED = {
    "distill.sbatch": {"TRAIN_DATA": "/d/{000000..000009}.tar", "LOGS": "/runs"},
    "finetune.sbatch": {"TRAIN_DATA": "/d/{000000..000009}.tar", "LOGS": "/runs", "STUDENT": "/runs/d/final"},
    "eval.sbatch": {"EVAL_ROOT": "/data/eval", "OUT": "/results",
                    "MODELS": "ViT-B-16-quickgelu:openai ViT-B-16-mem:/r/final"},
}
INHERITED = ("SLURM_", "VIRTUAL_ENV", "CONDA_PREFIX", "MODULES", "VENV", "PARTITION", "EXTRA_ARGS", "DRY_RUN")


def fake_python(folder, signals: bool) -> str:
    """A PATH whose ``python`` answers ``-m torch.distributed.run --help`` like a torchrun with or without
    --signals-to-handle (torch 2.9 and later, or before)."""
    folder.mkdir(exist_ok=True)
    flag = "  --signals-to-handle SIGNALS_TO_HANDLE" if signals else ""
    (folder / "python").write_text(f"#!/bin/sh\necho 'usage: torchrun [--nnodes NNODES]'\necho '{flag}'\n")
    (folder / "python").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A folder that looks like a virtual environment (bin/activate)."""
    folder = tmp_path_factory.mktemp("venv")
    (folder / "bin").mkdir()
    (folder / "bin" / "activate").write_text("")
    return folder


@pytest.fixture
def base(venv):
    """What every submission needs: the account, a GPU partition and the environment to load."""
    return {"ACCOUNT": "acct", "PARTITION": "gpu_a100", "VENV": str(venv)}


def clean_environment():
    return {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}


def dry_run(script, *args, **env):
    """(exit code, the printed commands as shell words re-joined with spaces, stderr)."""
    result = subprocess.run(["bash", str(SLURM / script), *args], env=dict(clean_environment(), DRY_RUN="1", **env),
                            capture_output=True, text=True)
    return result.returncode, "\n".join(commands(result.stdout)), result.stderr


def commands(stdout):
    return ["+ " + " ".join(shlex.split(line[2:])) for line in stdout.splitlines() if line.startswith("+ ")]


def launched(out, program="srun"):
    (line,) = [line for line in out.splitlines() if line.startswith(f"+ {program} ")]
    return line


def trained(launch):
    """The training config the launched command gives the trainer (its -c recipe file read, as the job reads it)."""
    words = shlex.split(launch[2:])
    return parse_args(words[words.index("memclip_train.main") + 1:])


@pytest.mark.parametrize("script", SCRIPTS + ["common.sh"])
def test_syntax(script):
    subprocess.run(["bash", "-n", str(SLURM / script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    result = subprocess.run(["shellcheck", "-x", *SCRIPTS, "common.sh"], cwd=SLURM, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_settings_are_named(script, base):
    for missing in list(REQUIRED[script]) + ["ACCOUNT", "PARTITION"]:
        env = dict(REQUIRED[script], **base)
        env.pop(missing)
        code, _, err = dry_run(script, **env)
        assert code == 2 and f"set {missing}:" in err, (missing, err)
    env = dict(REQUIRED[script], **base)
    env.pop("VENV")  # a fresh login shell: no venv, no conda env, no modules
    code, _, err = dry_run(script, **env)
    assert code == 2 and "set VENV=" in err and "fresh shell" in err, err
    code, _, err = dry_run(script, **dict(env, VENV=str(Path(base["VENV"]) / "nowhere")))
    assert code == 2 and "has no bin/activate" in err


def test_distill_submits_itself_and_prints_the_thesis_command(base):
    code, out, _ = dry_run("distill.sbatch", NODES="2", **base, **REQUIRED["distill.sbatch"])
    assert code == 0
    mkdir, submit = [line for line in out.splitlines() if line.startswith(("+ mkdir", "+ sbatch"))]
    assert mkdir == "+ mkdir -p /runs" and "--output /runs/slurm-%j.out" in submit
    assert "sbatch --account acct --partition gpu_a100 --nodes 2 --gpus-per-node 4" in submit
    assert "--cpus-per-task 18" in submit and "distill.sbatch" in submit
    launch = launched(out)
    assert f"-c {SLURM.parents[1] / 'configs' / 'recipes' / 'thesis-distill.yaml'} " in launch
    for flag in ("--resume latest", "--logs-dir /runs"):
        assert flag in launch, flag
    config = trained(launch)  # the recipe's values reach the trainer
    assert config.task.distill and config.task.distill_loss == "cosine"
    assert (config.model.model, config.model.pretrained, config.model.precision) == ("ViT-B-16-mem", "openai",
                                                                                     "amp_bf16")
    assert (config.optim.batch_size, config.optim.accum_freq, config.optim.lr, config.optim.wd, config.optim.epochs,
            config.optim.warmup) == (20, 4, 5e-4, 0.1, 38, 1000)
    assert config.model.grad_checkpointing and config.data.workers == 8 and config.data.dataset_type == "webdataset"
    assert launch.startswith("+ srun --ntasks-per-node 4")
    _, out, _ = dry_run("distill.sbatch", LR="1e-4", EPOCHS="2", **base, **REQUIRED["distill.sbatch"])
    assert (trained(launched(out)).optim.lr, trained(launched(out)).optim.epochs) == (1e-4, 2)  # a variable wins
    assert "--dataset-resampled" not in launch, "the thesis's code passes over the shards once per epoch"
    assert f"+ source {base['VENV']}/bin/activate" in out and "+ export SRUN_CPUS_PER_TASK=18" in out
    _, out, _ = dry_run("distill.sbatch", RESAMPLED="1", **base, **REQUIRED["distill.sbatch"])
    assert "--dataset-resampled" in launched(out)


def test_cores_follow_the_partition_and_feed_the_loaders(base):
    code, out, _ = dry_run("distill.sbatch", **dict(base, PARTITION="gpu_h100"), **REQUIRED["distill.sbatch"])
    assert code == 0 and "--partition gpu_h100" in out and "--cpus-per-task 16" in out  # 64 cores / 4 GPUs
    code, out, _ = dry_run("distill.sbatch", CPUS_PER_GPU="12", **base, **REQUIRED["distill.sbatch"])
    assert "--cpus-per-task 12" in out
    code, _, err = dry_run("distill.sbatch", WORKERS="16", **dict(base, PARTITION="gpu_h100"),
                           **REQUIRED["distill.sbatch"])
    assert code == 2 and "WORKERS=16 loader processes per GPU need more than CPUS_PER_GPU=16" in err
    env = dict(REQUIRED["finetune.sbatch"], SLURM_JOB_ID="7", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="4",
               SLURM_CPUS_PER_TASK="18", LAUNCHER="torchrun", **base)
    _, out, _ = dry_run("finetune.sbatch", **env)
    assert "+ export SRUN_CPUS_PER_TASK=72" in out  # one torchrun per node feeds four GPUs' loaders


def test_modules_are_loaded_in_the_job(base):
    env = dict(base, MODULES="2023 Python/3.11.3-GCCcore-12.3.0", **REQUIRED["eval.sbatch"])
    code, out, _ = dry_run("eval.sbatch", **env)
    assert code == 0
    lines = out.splitlines()
    load = lines.index("+ module load 2023 Python/3.11.3-GCCcore-12.3.0")
    assert lines[load - 1] == "+ module purge" and lines[load + 1].startswith("+ source ")


def test_training_arguments_keep_their_spaces(base, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("--wandb-notes\nfrom a file, with spaces\n\n")
    env = dict(base, EXTRA_ARGS_FILE=str(extra), EXTRA_ARGS="--name 'my run' --memory knn=32",
               **REQUIRED["distill.sbatch"])
    result = subprocess.run(["bash", str(SLURM / "distill.sbatch"), "--wandb-project-name", "two words"],
                            env=dict(clean_environment(), DRY_RUN="1", **env), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("+ srun", "+ sbatch"))]
    submit, launch = (shlex.split(line[2:]) for line in lines)
    assert submit[-2:] == ["--wandb-project-name", "two words"]  # sbatch hands them to the job verbatim
    tail = launch[launch.index("--resume") + 2:]
    assert tail == ["--wandb-notes", "from a file, with spaces", "--name", "my run", "--memory", "knn=32",
                    "--wandb-project-name", "two words"]
    code, _, err = dry_run("distill.sbatch", EXTRA_ARGS="--name 'unbalanced", **base, **REQUIRED["distill.sbatch"])
    assert code == 2 and "unbalanced quote" in err


def fake_programs(folder, **scripts):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/sh\n" + body)
        (folder / name).chmod(0o755)
    return folder


def test_the_log_folder_exists_before_sbatch_opens_it(base, tmp_path):
    """SLURM opens --output before the job runs: the folder must be made at submission."""
    logs = tmp_path / "not" / "yet" / "there"
    fake = fake_programs(tmp_path / "bin", sbatch=(
        'for a in "$@"; do case "$prev" in --output) out=$a;; esac; prev=$a; done\n'
        f'[ -d "$(dirname "$out")" ] && echo made > {tmp_path}/sbatch.log || echo missing > {tmp_path}/sbatch.log\n'))
    env = dict(clean_environment(), PATH=f"{fake}:{os.environ['PATH']}", **base,
               **dict(REQUIRED["distill.sbatch"], LOGS=str(logs)))
    result = subprocess.run(["bash", str(SLURM / "distill.sbatch")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sbatch.log").read_text().strip() == "made" and logs.is_dir()


def test_inside_a_job_the_environment_is_loaded_before_python_runs(tmp_path):
    """A job from a fresh shell: VENV's activate puts its python first; a python without torch stops the job."""
    venv = tmp_path / "venv"
    fake_programs(venv / "bin", python="exit 0\n")
    (venv / "bin" / "activate").write_text(f'PATH="{venv}/bin:$PATH"\n')
    fake = fake_programs(tmp_path / "slurm-bin", srun=f'echo "$SRUN_CPUS_PER_TASK $*" > {tmp_path}/srun.log\n',
                         scontrol="echo node01\n")
    env = dict(clean_environment(), PATH=f"{fake}:/usr/bin:/bin", VENV=str(venv), SLURM_JOB_ID="99",
               SLURM_JOB_NODELIST="node01", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="4", SLURM_CPUS_PER_TASK="18",
               **REQUIRED["finetune.sbatch"])
    result = subprocess.run(["bash", str(SLURM / "finetune.sbatch")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    logged = (tmp_path / "srun.log").read_text()
    assert logged.startswith("18 --ntasks-per-node 4") and "--batch-size 16" in logged
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no torch in this environment
    result = subprocess.run(["bash", str(SLURM / "finetune.sbatch")], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "cannot import torch and memclip_train" in result.stderr


def test_inside_a_job_the_geometry_comes_from_the_allocation(base, tmp_path):
    env = dict(REQUIRED["finetune.sbatch"], SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="8",
               LAUNCHER="torchrun", MASTER_ADDR="node01", PATH=fake_python(tmp_path / "bin", signals=True), **base)
    code, out, _ = dry_run("finetune.sbatch", **env)
    assert code == 0
    launch = launched(out)
    assert "--nnodes 2 --nproc_per_node 8" in launch and "--rdzv_endpoint node01:24242" in launch
    assert "SIGUSR1" in launch
    # the thesis's recipe by default: 77 tokens (no stretch), text frozen, warmup 1000, one pass per epoch, and its
    # code's contrastive batch of 64 (32 x accum 2 on one GPU): 4 per GPU on 16 GPUs
    assert f"-c {SLURM.parents[1] / 'configs' / 'recipes' / 'thesis-finetune.yaml'} " in launch
    for flag in ("--pretrained /runs/d/final", "--batch-size 4 --accum-freq 1", "--name finetune-vit-b-16-mem "):
        assert flag in launch, flag
    config = trained(launch)
    assert config.task.long_short_alpha == 0.8 and config.model.trainable == ("memory", "visual")
    assert (config.data.caption_key, config.data.long_caption_key) == ("txt", "json.long")
    assert (config.optim.lr, config.optim.epochs, config.optim.warmup, config.optim.wd) == (1e-5, 10, 1000, 0.1)
    assert (config.optim.batch_size, config.optim.accum_freq) == (4, 1)  # the geometry overrides the recipe's 32 x 2
    assert config.model.grad_checkpointing and config.model.precision == "amp_bf16"
    assert config.model.text_context_length is None and config.model.text_pos_stretch is None
    assert not config.data.dataset_resampled
    code, out, _ = dry_run("finetune.sbatch", **dict(env, RECIPE="longclip248"))
    assert "--name finetune-vit-b-16-mem-longclip248" in out
    config = trained(launched(out))
    assert config.model.trainable == ("memory", "visual", "text")
    assert (config.model.text_context_length, config.model.text_pos_stretch) == (248, "longclip")
    code, _, err = dry_run("finetune.sbatch", **dict(env, RECIPE="248"))
    assert code == 2 and "RECIPE=248: thesis" in err
    # "Ours+TULIP": TULIP's released text encoder, frozen, at 248 tokens
    code, _, err = dry_run("finetune.sbatch", **dict(env, RECIPE="tulip"))
    assert code == 2 and "set TULIP_TEXT:" in err
    code, out, _ = dry_run("finetune.sbatch", **dict(env, RECIPE="tulip", TULIP_TEXT="/w/tulip-B-16.pt"))
    assert "--name finetune-vit-b-16-mem-tulip" in launched(out)
    config = trained(launched(out))
    assert config.model.trainable == ("memory", "visual") and config.model.text_tower == "tulip:/w/tulip-B-16.pt"
    assert config.model.text_context_length == 248 and config.task.long_short_alpha == 0.8


@pytest.mark.parametrize("signals", [True, False], ids=["torch-2.9+", "older-torch"])
def test_torchrun_gets_signals_to_handle_only_when_it_takes_it(tmp_path, base, signals):
    env = dict(REQUIRED["finetune.sbatch"], SLURM_JOB_ID="4242", LAUNCHER="torchrun", **base,
               PATH=fake_python(tmp_path / "bin", signals))
    code, out, err = dry_run("finetune.sbatch", **env)
    assert code == 0
    launch = launched(out)
    assert ("--signals-to-handle SIGTERM,SIGINT,SIGUSR1" in launch) == signals
    assert ("no --signals-to-handle" in err) == (not signals) and ("LAUNCHER=srun" in err) == (not signals)


@pytest.mark.parametrize("geometry, per_gpu, accum", [
    ({}, 16, 1),                                      # 4 GPUs: 16 x 4 = 64
    ({"GPUS_PER_NODE": "1", "ACCUM_FREQ": "2"}, 32, 2),  # the thesis's code exactly: 32 x accum 2 on one GPU
    ({"GPUS_PER_NODE": "1"}, 64, 1),
])
def test_finetune_keeps_the_thesis_contrastive_batch(base, geometry, per_gpu, accum):
    code, out, _ = dry_run("finetune.sbatch", **geometry, **base, **REQUIRED["finetune.sbatch"])
    assert code == 0 and f"--batch-size {per_gpu} --accum-freq {accum}" in launched(out)


def test_finetune_refuses_a_contrastive_batch_that_does_not_split(base):
    code, _, err = dry_run("finetune.sbatch", NODES="3", **base, **REQUIRED["finetune.sbatch"])
    assert code == 2 and "CONTRASTIVE_BATCH=64 does not split over 12 GPUs" in err
    code, out, _ = dry_run("finetune.sbatch", NODES="3", BATCH_SIZE="32", **base, **REQUIRED["finetune.sbatch"])
    assert code == 0 and "--batch-size 32" in out


def test_shards_come_from_the_converter_output(tmp_path, base):
    (tmp_path / "train").mkdir()
    (tmp_path / "val-1k").mkdir()
    (tmp_path / "val-1k" / "sizes.json").write_text("{}")
    (tmp_path / "conversion.json").write_text("{}")
    env = dict(LOGS="/runs", SHARDS=str(tmp_path), **base)
    code, out, _ = dry_run("distill.sbatch", **env)
    assert code == 0 and f"--train-data {tmp_path}/train " in out and f"--val-data {tmp_path}/val-1k" in out
    code, _, err = dry_run("distill.sbatch", **dict(env, SHARDS=str(tmp_path / "train")))
    assert code == 2 and "has no conversion.json" in err


def test_eval_runs_the_thesis_splits_then_every_table_5_6_column(base):
    code, out, _ = dry_run("eval.sbatch", **base, **REQUIRED["eval.sbatch"])
    assert code == 0
    submit = [line for line in out.splitlines() if line.startswith("+ sbatch")][0]
    retrieval, segmentation = [line for line in out.splitlines() if line.startswith("+ python")]
    assert "--gpus-per-node 1" in submit and "--cpus-per-task 18" in submit
    assert "--output /results/slurm/slurm-%j.out" in submit
    assert "--model ViT-B-16-quickgelu --pretrained openai --model ViT-B-16-mem --pretrained /r/final" in retrieval
    for dataset, folder in (("coco@val2017", "coco"), ("flickr30k@karpathy-val", "flickr30k"),
                            ("docci@sentence", "docci"), ("iiw@all:sentence", "iiw"), ("dci", "dci"),
                            ("urban1k", "urban1k"), ("sharegpt4v-1k", "sharegpt4v")):
        assert f"--dataset {dataset} --data-root /data/eval/{folder}" in retrieval, dataset
    for dataset, folder in (("voc20", "VOC2012"), ("ade20k", "ADEChallengeData2016"),
                            ("cocostuff10k", "cocostuff10k"), ("cocostuff164k", "cocostuff164k")):
        assert f"--dataset {dataset} --data-root /data/eval/{folder}" in segmentation, dataset
    assert "--method sclip" in segmentation


def test_eval_runs_any_single_column(base):
    code, out, err = dry_run("eval.sbatch", SEGMENTATION="cocostuff10k", RETRIEVAL="", **base,
                             **REQUIRED["eval.sbatch"])
    assert code == 0, err  # used to abort with "ROOT[cocostuff10k]: unbound variable"
    (segmentation,) = [line for line in out.splitlines() if line.startswith("+ python")]
    assert segmentation.endswith("--dataset cocostuff10k --data-root /data/eval/cocostuff10k")
    code, _, err = dry_run("eval.sbatch", RETRIEVAL="imagenet", **base, **REQUIRED["eval.sbatch"])
    assert code == 2 and "no folder known for dataset 'imagenet'" in err


def test_preempted_runs_are_requeued(tmp_path):
    fake = fake_programs(tmp_path / "bin", scontrol=f"echo \"$@\" > {tmp_path}/scontrol.log\n")
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_JOB_ID="77")
    script = f"source {SLURM}/common.sh; requeue_if_preempted 3"
    assert subprocess.run(["bash", "-c", script], env=env).returncode == 0
    assert (tmp_path / "scontrol.log").read_text().strip() == "requeue 77"
    failed = subprocess.run(["bash", "-c", f"source {SLURM}/common.sh; requeue_if_preempted 1"], env=env)
    assert failed.returncode == 1
