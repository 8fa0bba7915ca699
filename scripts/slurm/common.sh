#!/usr/bin/env bash
# Shared by the memclip sbatch scripts: checks, the environment, cluster geometry, launch and requeue.
#
# A script run with `bash X.sbatch [training arguments]` (outside a job) checks its settings, creates the log folder
# and submits itself with sbatch, passing those arguments on verbatim; inside the job it loads MODULES, activates
# VENV and trains. DRY_RUN=1 prints every command (mkdir, sbatch, module, source, srun) instead of running it.

PREEMPTED_EXIT_CODE=3

die() { echo "error: $*" >&2; exit 2; }

require() {  # require VAR "what it is"
  local name=$1 what=$2
  [ -n "${!name:-}" ] || die "set $name: $what (see scripts/slurm/README.md)"
}

run() {  # print the command; run it unless DRY_RUN=1
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ "${DRY_RUN:-0}" = 1 ] || "$@"
}

recipe_file() {  # recipe_file NAME: the shipped recipe configs/recipes/NAME.yaml (python -m memclip_train.main -c)
  local file
  file="$(cd "${MEMCLIP_SLURM_DIR:-$HERE}/../.." && pwd)/configs/recipes/$1.yaml"
  [ -f "$file" ] || die "no recipe $file: run from a memclip checkout (python -m memclip_train.recipes --write)"
  echo "$file"
}

use_converter_output() {  # SHARDS=<the converter's --out>: TRAIN_DATA and VAL_DATA from its split folders
  [ -n "${SHARDS:-}" ] || return 0
  [ -f "$SHARDS/conversion.json" ] || die "SHARDS=$SHARDS has no conversion.json: give the converter's --out folder"
  TRAIN_DATA=${TRAIN_DATA:-$SHARDS/train}   # the trainer reads the shard list from its sizes.json
  if [ -z "${VAL_DATA:-}" ] && [ -f "$SHARDS/val-1k/sizes.json" ]; then VAL_DATA=$SHARDS/val-1k; fi
  export TRAIN_DATA VAL_DATA
}

cpus_per_gpu() {  # CPUS_PER_GPU, else the partition's cores per GPU (Snellius: gpu_h100 64/4, gpu_a100 72/4)
  if [ -n "${CPUS_PER_GPU:-}" ]; then echo "$CPUS_PER_GPU"; return; fi
  case "${PARTITION:-}" in
    gpu_h100) echo 16 ;;
    *) echo 18 ;;   # the thesis's jobs asked for 18 per GPU (gpu_a100)
  esac
}

check_workers() {  # WORKERS loader processes per GPU need a core each, plus one for the training process
  local workers=${WORKERS:-8} cpus
  cpus=$(cpus_per_gpu)
  [[ $cpus =~ ^[0-9]+$ && $workers =~ ^[0-9]+$ ]] || die "CPUS_PER_GPU=$cpus and WORKERS=$workers must be numbers"
  [ "$workers" -lt "$cpus" ] || die "WORKERS=$workers loader processes per GPU need more than CPUS_PER_GPU=$cpus cores"
}

extra_args() {  # EXTRA: the training arguments from EXTRA_ARGS_FILE (one per line) and EXTRA_ARGS (shell quoting)
  EXTRA=()
  if [ -n "${EXTRA_ARGS_FILE:-}" ]; then
    [ -f "$EXTRA_ARGS_FILE" ] || die "EXTRA_ARGS_FILE=$EXTRA_ARGS_FILE does not exist (on nodes too: use shared storage)"
    mapfile -t EXTRA < <(grep -v '^[[:space:]]*$' "$EXTRA_ARGS_FILE")
  fi
  if [ -n "${EXTRA_ARGS:-}" ]; then
    local words
    # xargs splits on blanks and honours '...' and "..." quotes without running anything (no eval)
    words=$(printf '%s' "$EXTRA_ARGS" | xargs printf '%s\n') || die "EXTRA_ARGS has an unbalanced quote: $EXTRA_ARGS"
    mapfile -t -O "${#EXTRA[@]}" EXTRA <<< "$words"
  fi
}

check_environment() {  # at submission: the job must find python with torch and memclip from a fresh shell
  if [ -n "${VENV:-}" ]; then
    [ -f "$VENV/bin/activate" ] || die "VENV=$VENV has no bin/activate: give the virtual environment's folder"
  elif [ -n "${VIRTUAL_ENV:-}" ]; then
    VENV=$VIRTUAL_ENV   # the active venv travels to the job explicitly, not only through PATH
    export VENV
  elif [ -z "${CONDA_PREFIX:-}" ] && [ -z "${MODULES:-}" ]; then
    die "set VENV=/path/to/venv (the environment with 'pip install -e .[kernels]') and, on clusters with modules, " \
        "MODULES='...' (e.g. Snellius: MODULES='2023 Python/3.11.3-GCCcore-12.3.0'): the job starts from a fresh shell"
  fi
}

submit_self() {  # submit_self SCRIPT [sbatch options] -- [script arguments]: sbatch with the account and geometry
  local script=$1; shift
  local sbatch_opts=() script_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do sbatch_opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  script_args=("$@")
  require ACCOUNT "the SLURM account to charge (sbatch --account)"
  local why="without one, a GPU job lands on the cluster's default (CPU) partition"
  require PARTITION "the GPU partition, e.g. gpu_a100 or gpu_h100 on Snellius (sinfo -s lists them); $why"
  check_environment
  check_workers
  local gpus=${GPUS_PER_NODE:-4} log_dir
  log_dir=${SLURM_LOG_DIR:-${LOGS:-$PWD/logs}}
  # SLURM opens --output before the job runs: a missing folder would kill the job without a log
  run mkdir -p "$log_dir"
  local args=(--account "$ACCOUNT" --partition "$PARTITION" --nodes "${NODES:-1}" --gpus-per-node "$gpus"
              --ntasks-per-node "$gpus" --cpus-per-task "$(cpus_per_gpu)" --time "${TIME_LIMIT:-24:00:00}"
              --job-name "${JOB_NAME:-$(basename "$script" .sbatch)}" --output "$log_dir/slurm-%j.out")
  run sbatch "${args[@]}" "${sbatch_opts[@]}" "$script" "${script_args[@]}"
}

load_environment() {  # inside the job: MODULES, then VENV; then python must import torch and memclip_train
  if [ -n "${MODULES:-}" ]; then
    if ! type module > /dev/null 2>&1; then
      local init
      for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash /etc/profile.d/modules.sh; do
        # shellcheck disable=SC1090
        [ -f "$init" ] && source "$init" && break
      done
    fi
    type module > /dev/null 2>&1 || [ "${DRY_RUN:-0}" = 1 ] || die "MODULES is set but the job has no 'module' command"
    run module purge
    local modules=()
    read -r -a modules <<< "$MODULES"
    run module load "${modules[@]}"
  fi
  if [ -n "${VENV:-}" ]; then
    run source "$VENV/bin/activate"
  fi
  if [ "${DRY_RUN:-0}" != 1 ]; then
    python -c "import torch, memclip_train" 2> /dev/null \
      || die "python ($(command -v python || echo none)) cannot import torch and memclip_train: set VENV and MODULES"
  fi
}

world_size() {  # GPUs of the job: the allocation's inside it, NODES x GPUS_PER_NODE before submission
  local gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-${GPUS_PER_NODE:-4}}}
  echo $((${SLURM_NNODES:-${NODES:-1}} * ${gpus##*:}))
}

cluster_geometry() {  # MASTER_ADDR, MASTER_PORT, NNODES, GPUS_PER_NODE, SRUN_CPUS_PER_TASK from the allocation
  if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  else
    MASTER_ADDR=${MASTER_ADDR:-localhost}
  fi
  MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
  NNODES=${SLURM_NNODES:-${NODES:-1}}
  local gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-${GPUS_PER_NODE:-4}}}
  GPUS_PER_NODE=${gpus##*:}   # "h100:4" -> 4
  # srun (SLURM >= 22.05) does not inherit sbatch's --cpus-per-task: a step gets its cores from this variable
  local cpus=${SLURM_CPUS_PER_TASK:-$(cpus_per_gpu)}
  if [ "${LAUNCHER:-srun}" = torchrun ]; then
    SRUN_CPUS_PER_TASK=$((cpus * GPUS_PER_NODE))   # one torchrun per node feeds every GPU's loaders
  else
    SRUN_CPUS_PER_TASK=$cpus
  fi
  export MASTER_ADDR MASTER_PORT SRUN_CPUS_PER_TASK
}

torchrun_signal_args() {  # --signals-to-handle when this torchrun takes it (torch 2.9 and later), else a warning
  if python -m torch.distributed.run --help 2>/dev/null | grep -q -- '--signals-to-handle'; then
    TORCHRUN_SIGNALS=(--signals-to-handle "SIGTERM,SIGINT,SIGUSR1")
  else
    TORCHRUN_SIGNALS=()
    echo "warning: this torchrun has no --signals-to-handle (torch < 2.9): it will not forward SIGUSR1 to the" \
      "trainers, so a job reaching its time limit stops without its last checkpoint; use LAUNCHER=srun" >&2
  fi
}

launch() {  # launch "python -m memclip_train.main" (or another module) on every GPU of the allocation
  cluster_geometry
  echo "+ export SRUN_CPUS_PER_TASK=$SRUN_CPUS_PER_TASK"
  local launcher=${LAUNCHER:-srun}
  if [ "$launcher" = torchrun ]; then
    # one task per node; torchrun starts one process per GPU and forwards SIGUSR1 to them (when it can)
    torchrun_signal_args
    run srun --ntasks-per-node 1 --kill-on-bad-exit=1 python -m torch.distributed.run \
      --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" --rdzv_backend c10d \
      --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" "${TORCHRUN_SIGNALS[@]}" "$@"
  else
    # one task per GPU; memclip reads SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS and MASTER_ADDR/PORT
    run srun --ntasks-per-node "$GPUS_PER_NODE" --kill-on-bad-exit=1 python "$@"
  fi
}

requeue_if_preempted() {  # status of the launch
  local status=$1
  if [ "$status" = "$PREEMPTED_EXIT_CODE" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "checkpoint written before the time limit: requeueing job $SLURM_JOB_ID (it resumes with --resume latest)"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  exit "$status"
}
