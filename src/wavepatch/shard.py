"""Work across processes: ``torchrun --nproc_per_node N -m wavepatch.cli reconstruct VOLUME --volume ...`` and
``torchrun ... -m wavepatch.cli bench ...``.

torchrun starts N copies with RANK / WORLD_SIZE / LOCAL_RANK set. :func:`process_group` joins them (gloo on
the CPU, NCCL on GPUs, one GPU per local rank). :func:`slab` gives each rank a contiguous run of slices, widened
by ``halo`` slices on each side where an inter-slice coupling needs neighbours; :func:`gather_slabs` puts the
kept slices back together on rank 0, which writes the result. ``bench`` deals its (setting, method, slice) jobs
out round-robin (:func:`share`) and gathers the rows on rank 0 (:func:`gather_to_root`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

Tensor = torch.Tensor


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group(device: str = "cpu") -> tuple[int, int, str]:
    """(rank, world size, this rank's device): joins torchrun's process group on first use (a no-op alone)."""
    world, rank = world_size(), int(os.environ.get("RANK", "0"))
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        atexit.register(_leave_group)
    return rank, world, device


def _leave_group() -> None:
    """Destroy the process group before the interpreter exits: left to the destructors at shutdown, gloo could
    abort a rank ("terminate called without an active exception", seen once in CI on 2 CPU processes)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Slab:
    """Slices lo..hi (halo included) are computed; keep_lo..keep_hi (absolute indices) are this rank's own."""

    lo: int
    hi: int
    keep_lo: int
    keep_hi: int


def slab(n: int, rank: int, world: int, halo: int = 0) -> Slab:
    """Rank ``rank``'s share of ``n`` slices: near-equal contiguous runs (the first ``n % world`` one longer),
    each widened by ``halo`` slices on both sides within 0..n."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    base, extra = divmod(n, world)
    keep_lo = rank * base + min(rank, extra)
    keep_hi = keep_lo + base + (rank < extra)
    return Slab(max(0, keep_lo - halo), min(n, keep_hi + halo), keep_lo, keep_hi)


def broadcast_from_root(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Rank 0's tensor ``t`` (others pass None) on every rank, all of ``shape``."""
    buf = t.contiguous() if dist.get_rank() == 0 else torch.empty(shape, dtype=dtype)
    dist.broadcast(buf, src=0)
    return buf


def gather_slabs(part: Tensor, slabs: list[Slab]) -> Tensor | None:
    """Each rank's kept slices of ``part`` (its computed slices lo..hi along axis 0), concatenated in slice
    order on rank 0; None on the other ranks. CPU tensors (gloo)."""
    rank = dist.get_rank()
    mine = slabs[rank]
    kept = part[mine.keep_lo - mine.lo: mine.keep_hi - mine.lo].contiguous().cpu()
    longest = max(s.keep_hi - s.keep_lo for s in slabs)
    padded = torch.zeros((longest, *kept.shape[1:]), dtype=kept.dtype)
    padded[:kept.shape[0]] = kept
    pieces = [torch.empty_like(padded) for _ in slabs] if rank == 0 else None
    dist.gather(padded, pieces, dst=0)
    if rank != 0:
        return None
    return torch.cat([p[:s.keep_hi - s.keep_lo] for p, s in zip(pieces, slabs, strict=True)])


def share(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s items: every world-th one from index ``rank`` (round-robin, so costly kinds of job are
    spread over the ranks)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    return items[rank::world]


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if dist.is_initialized():
        dist.barrier()


def gather_to_root(obj) -> list | None:
    """Every rank's picklable ``obj`` in rank order on rank 0, None on the others; alone: [obj]. (Objects made by
    this program's own ranks, never a user's file.)"""
    if not dist.is_initialized():
        return [obj]
    objs = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, objs, dst=0)
    return objs
