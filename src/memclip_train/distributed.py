"""Process-group setup from torchrun or SLURM environment variables (nccl on CUDA, gloo on the CPU)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits: its global rank, rank on the node, the world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_env(environ: Mapping[str, str]) -> Optional[tuple]:
    """(rank, local_rank, world_size) from torchrun's or SLURM's variables, or None for a single process.

    torchrun sets RANK/LOCAL_RANK/WORLD_SIZE. Under ``srun`` without torchrun, SLURM_PROCID/SLURM_LOCALID/
    SLURM_NTASKS are used, and MASTER_ADDR/MASTER_PORT must be exported (the sbatch scripts do this).
    """
    if "WORLD_SIZE" in environ and int(environ["WORLD_SIZE"]) > 1:
        return int(environ["RANK"]), int(environ.get("LOCAL_RANK", 0)), int(environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in environ and int(environ["SLURM_NTASKS"]) > 1 and "SLURM_PROCID" in environ:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in environ]
        if missing:
            raise RuntimeError(f"SLURM launch without torchrun needs {missing} exported (see scripts/slurm/)")
        return int(environ["SLURM_PROCID"]), int(environ.get("SLURM_LOCALID", 0)), int(environ["SLURM_NTASKS"])
    return None


def init_distributed(device: Optional[str] = None, dist_url: Optional[str] = None, backend: Optional[str] = None,
                     set_device_rank: bool = True) -> DistributedEnv:
    """Join the process group if the environment describes one, and pick this process's device.

    Args:
        dist_url: the process group's ``init_method`` (default ``env://``: MASTER_ADDR/MASTER_PORT).
        backend: the process group's backend (default nccl on CUDA, gloo on the CPU).
        set_device_rank: use ``cuda:LOCAL_RANK``; False uses ``cuda:0`` (one visible GPU per process).
    """
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    ranks = ranks_from_env(os.environ)
    if ranks is None:
        chosen = torch.device(device or ("cuda" if use_cuda else "cpu"))
        return DistributedEnv(device=chosen)
    rank, local_rank, world_size = ranks
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))
    if use_cuda:
        chosen = torch.device(f"cuda:{local_rank if set_device_rank else 0}")
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), init_method=dist_url,
                                rank=rank, world_size=world_size)
    logger.info("process %d of %d (local rank %d) on %s", rank, world_size, local_rank, chosen)
    return DistributedEnv(rank, local_rank, world_size, chosen)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def barrier(env: DistributedEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_max(value: torch.Tensor, env: DistributedEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value
