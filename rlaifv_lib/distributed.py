"""Data parallelism for the data engine: N processes, one model replica each, one writer (Sec. 3, scaled out).

Launched with ``torchrun --nproc_per_node N`` or ``accelerate launch`` (see ``configs/accelerate/``), every
process runs the same pipeline code on the same inputs. The expensive loops -- sampling ``generate`` batches,
claim decomposition, the labeler's per-image (or per-batch) forward passes -- call :func:`map_shards`: each rank
computes its round-robin share of the *same work units a single process would form* (whole batches, whole
images), the results are gathered to every rank and put back in the original order. Every candidate has its own
seed and every unit is computed exactly as in one process, so the artifacts are byte-identical to a 1-process run
(``tests/test_distributed.py``). Rank 0 alone writes files (``rundir.RunDirectory``); the others wait at barriers.

In one process (no ``WORLD_SIZE`` > 1 in the environment) every function here is a no-op: nothing is initialised,
``map_shards`` is a plain loop.

The process group is set up through ``accelerate.PartialState``: NCCL on GPUs, gloo on CPU
(``PartialState(cpu=True, backend="gloo")``). TRL's trainer re-creates accelerate's state for DPO and finds the
group already initialised, so sampling, scoring and DDP training share one launch.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Callable, Sequence, TypeVar

import torch

__all__ = ["launched", "setup", "rank", "world_size", "is_main", "barrier", "agree", "map_shards", "share", "shard_devices", "teardown"]

T = TypeVar("T")
R = TypeVar("R")


def launched() -> bool:
    """Whether this process was started by a launcher with more than one process (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the launch's process group (once; nothing in one process): NCCL on GPUs, gloo on CPU."""
    if not launched() or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    from accelerate import PartialState

    threads = torch.get_num_threads()  # accelerate may reset it on CPU when OMP_NUM_THREADS is unset
    if torch.cuda.is_available():
        PartialState()  # NCCL, and this process's GPU (LOCAL_RANK) made current
    else:
        PartialState(cpu=True, backend="gloo")
    torch.set_num_threads(threads)
    atexit.register(teardown)  # gloo's threads must stop before the interpreter does, or the exit aborts


def teardown() -> None:
    """Leave the launch's process group (nothing if none is initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _active() -> bool:
    if not launched():
        return False
    setup()
    return True


def rank() -> int:
    """This process's rank (0 in one process)."""
    return torch.distributed.get_rank() if _active() else 0


def world_size() -> int:
    """Number of processes of the launch (1 in one process)."""
    return torch.distributed.get_world_size() if _active() else 1


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing in one process)."""
    if _active():
        torch.distributed.barrier()


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank (so every process takes the same branch); ``value`` itself in one process."""
    if not _active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def map_shards(fn: Callable[[T], R], units: Sequence[T]) -> list[R]:
    """``[fn(u) for u in units]``, the units dealt round-robin over the ranks and the results gathered, in order, to every rank.

    ``fn`` must give the same result for a unit whatever else runs (true of a whole ``generate`` batch with
    per-row seeds, or of one image's questions): then the gathered list equals the 1-process list exactly.
    """
    if not _active():
        return [fn(u) for u in units]
    size, me = torch.distributed.get_world_size(), torch.distributed.get_rank()
    mine = [(i, fn(u)) for i, u in enumerate(units) if i % size == me]
    parts: list[Any] = [None] * size
    torch.distributed.all_gather_object(parts, mine)
    out: list[Any] = [None] * len(units)
    for part in parts:
        for i, result in part:
            out[i] = result
    return out


def share(n: int) -> int:
    """How many of ``n`` units :func:`map_shards` gives this process (for its progress bar)."""
    return len(range(n)[rank() :: world_size()])


def shard_devices(n_gpus: int | None = None) -> list[int]:
    """The GPUs this process owns when the node's processes share its GPUs evenly: ``LOCAL_RANK``, then every
    ``LOCAL_WORLD_SIZE``-th GPU after it.

    One process per GPU (policy-per-GPU) gives ``[LOCAL_RANK]``. Two processes on 8 GPUs give rank 0 GPUs [0, 2, 4, 6]
    and rank 1 GPUs [1, 3, 5, 7] (labeler-over-GPUs: ``LoadOptions(device_map="auto")`` spreads a model over them
    only). Each process's first GPU is ``cuda:LOCAL_RANK``, the device accelerate gives it for training.
    """
    n_gpus = torch.cuda.device_count() if n_gpus is None else n_gpus
    local, local_size = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if n_gpus < local_size:
        raise RuntimeError(f"{local_size} processes per node need at least as many GPUs, found {n_gpus}")
    return list(range(local, n_gpus, local_size))[: n_gpus // local_size]
