"""Training on several processes with PyTorch DistributedDataParallel.

Started by ``torchrun --nproc_per_node N -m ternaus_backend.cli train ...`` (or
``ternaus train --gpus N``, which runs torchrun on this machine): every rank reads the training
data, takes its share of each global batch (the crops of rank r are the global batch's items r,
r + N, ...: the same crops a single process would draw), gradients are averaged across ranks,
and rank 0 alone validates, reports and writes the model and the checkpoint. NCCL on GPUs, gloo
on CPUs. A checkpoint holds the plain model, so a run resumes with any N.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from ternaus_backend.device import pick_device
from ternaus_backend.errors import InputError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a distributed run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def start(ranks: Ranks, device_name: str | None) -> torch.device:
    """Join the process group (when distributed) and return this rank's device."""
    device = pick_device(device_name)
    if not ranks.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop(ranks: Ranks) -> None:
    """Leave the process group at the end of a distributed run."""
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model to train: itself, or wrapped so gradients are averaged across ranks."""
    if not ranks.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def rank_batch(batch_size: int, ranks: Ranks) -> int:
    """This rank's share of the global batch."""
    if batch_size % ranks.world:
        raise InputError(
            f"The batch size {batch_size} cannot be shared by {ranks.world} processes: use a "
            f"multiple of {ranks.world}."
        )
    return batch_size // ranks.world


def sampler(dataset: Dataset, ranks: Ranks) -> DistributedSampler | None:
    """Items r, r + N, r + 2N... of the (deterministic) crop dataset for rank r."""
    if not ranks.active:
        return None
    return DistributedSampler(
        dataset, num_replicas=ranks.world, rank=ranks.rank, shuffle=False, drop_last=True
    )


def mean(value: torch.Tensor, ranks: Ranks) -> float:
    """The mean of a scalar over all ranks (the global batch's loss)."""
    if not ranks.active:
        return float(value.item())
    total = value.detach().clone().reshape(1).float()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total.item()) / ranks.world


def barrier(ranks: Ranks) -> None:
    """Wait until every rank got here (rank 0 validates while the others wait)."""
    if ranks.active:
        dist.barrier()


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """``ternaus train --gpus N ARGS`` as the torchrun command line that runs ARGS on N processes
    of this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "ternaus_backend.cli",
        *argv,
    ]
