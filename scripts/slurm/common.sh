#!/usr/bin/env bash
# Shared by the memclip sbatch scripts: checks, cluster geometry, launch and requeue.
#
# A script run with `bash X.sbatch` (outside a job) submits itself with sbatch; inside the job it trains.
# DRY_RUN=1 prints the sbatch command and the exact launch command instead of running either.

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

use_converter_output() {  # SHARDS=<the converter's --out>: TRAIN_DATA and VAL_DATA from its split folders
  [ -n "${SHARDS:-}" ] || return 0
  [ -f "$SHARDS/conversion.json" ] || die "SHARDS=$SHARDS has no conversion.json: give the converter's --out folder"
  TRAIN_DATA=${TRAIN_DATA:-$SHARDS/train}   # the trainer reads the shard list from its sizes.json
  if [ -z "${VAL_DATA:-}" ] && [ -f "$SHARDS/val-1k/sizes.json" ]; then VAL_DATA=$SHARDS/val-1k; fi
  export TRAIN_DATA VAL_DATA
}

submit_self() {  # submit this script with the account and geometry from the environment
  local script=$1; shift
  require ACCOUNT "the SLURM account to charge (sbatch --account)"
  local args=(--account "$ACCOUNT" --nodes "${NODES:-1}" --gpus-per-node "${GPUS_PER_NODE:-4}"
              --ntasks-per-node "${GPUS_PER_NODE:-4}" --time "${TIME_LIMIT:-24:00:00}"
              --job-name "${JOB_NAME:-$(basename "$script" .sbatch)}" --output "${LOGS:-logs}/slurm-%j.out")
  [ -n "${PARTITION:-}" ] && args+=(--partition "$PARTITION")
  run sbatch "${args[@]}" "$@" "$script"
}

cluster_geometry() {  # MASTER_ADDR, MASTER_PORT, NNODES, GPUS_PER_NODE from the allocation
  if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  else
    MASTER_ADDR=${MASTER_ADDR:-localhost}
  fi
  MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
  NNODES=${SLURM_NNODES:-${NODES:-1}}
  local gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-${GPUS_PER_NODE:-4}}}
  GPUS_PER_NODE=${gpus##*:}   # "h100:4" -> 4
  export MASTER_ADDR MASTER_PORT
}

torchrun_signal_args() {  # --signals-to-handle when this torchrun takes it (torch 2.9 and later), else a warning
  if python -m torch.distributed.run --help 2>/dev/null | grep -q -- '--signals-to-handle'; then
    TORCHRUN_SIGNALS=(--signals-to-handle SIGTERM,SIGINT,SIGUSR1)
  else
    TORCHRUN_SIGNALS=()
    echo "warning: this torchrun has no --signals-to-handle (torch < 2.9): it will not forward SIGUSR1 to the" \
      "trainers, so a job reaching its time limit stops without its last checkpoint; use LAUNCHER=srun" >&2
  fi
}

launch() {  # launch "python -m memclip_train.main" (or another module) on every GPU of the allocation
  cluster_geometry
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
