"""Multi-GPU / multi-node set-up for torchrun, in one place.

Under `torchrun` the environment holds RANK, WORLD_SIZE and LOCAL_RANK; otherwise the
run is a single process. Only rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import parse_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by torchrun (NCCL on CUDA, gloo on the CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(), parse_device(device_spec)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = parse_device(device_spec, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all processes (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def broadcast_object(obj):
    """Rank 0's value of `obj` on every process."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_agree(ok: bool, device: torch.device) -> bool:
    """True when `ok` holds on every process (one all-reduce; a no-op in a single process).

    Used before raising on one process, so that the others do not wait forever in the next
    collective (the gradient all-reduce) of a step the first one has abandoned.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([0 if ok else 1], device=device)
    dist.all_reduce(flag)
    return int(flag.item()) == 0


class Session:
    """The processes and device of one training run: `with Session(cfg.device) as s:`.

    Starts the process group under torchrun and tears it down on every exit path.
    """

    def __init__(self, device_spec: str):
        self.info, self.device = init_distributed(device_spec)

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def log(self, msg: str) -> None:
        """Print on the main process only."""
        if self.info.is_main:
            print(msg, flush=True)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        cleanup_distributed()
