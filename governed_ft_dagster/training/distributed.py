"""A training process's place in a torchrun job, the collectives the job adds to DDP's, and why its ranks ended.

No Dagster here: the job script and the resources that launch it both use these.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Where each rank records its state (running, completed, failed...), so a launcher can name the rank that failed.
RANK_STATUS_DIR_ENV = "GOVERNED_FT_RANK_STATUS_DIR"
DEFAULT_TIMEOUT_S = 1800
# How a collective reports a peer that went away (gloo over TCP, NCCL), besides torch.distributed.DistError.
_PEER_LOST_MARKERS = ("connection closed by peer", "connection reset by peer", "broken pipe", "nccl communicator",
                      "socket timeout", "gloo", "the client socket has failed")


class PeerFailure(RuntimeError):
    """Another rank failed or went away; this rank stops as a consequence, not as the cause."""


@dataclass(frozen=True)
class Rank:
    """Where this process stands in the job: global and local rank, world size, node and host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    host: str = "localhost"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Rank:
        """As torchrun sets it (RANK, WORLD_SIZE, LOCAL_RANK, ...; the host from SageMaker's SM_CURRENT_HOST)."""
        env = os.environ if environ is None else environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(rank=int(env.get("RANK", "0")), world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                   local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
                   node_rank=int(env.get("GROUP_RANK", "0")),
                   host=env.get("SM_CURRENT_HOST") or socket.gethostname())

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: reads the governed data, writes the adapter, reports to Dagster and MLflow."""
        return self.rank == 0

    def label(self) -> str:
        return rank_label(self.rank, self.local_rank, self.host)


def rank_label(rank: int, local_rank: int | None = None, host: str | None = None) -> str:
    """'rank 1 (local rank 1 on algo-1)': how errors name a rank."""
    where = [f"local rank {local_rank}" if local_rank is not None else "", f"on {host}" if host else ""]
    detail = " ".join(part for part in where if part)
    return f"rank {rank}" + (f" ({detail})" if detail else "")


def init_process_group(rank: Rank, use_cuda: bool, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
    """Join the job's process group: gloo for CPU tensors, NCCL for CUDA tensors on this rank's own GPU."""
    import torch
    import torch.distributed as dist

    if not rank.distributed or dist.is_initialized():
        return
    if use_cuda:
        torch.cuda.set_device(rank.local_rank)
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_first(rank: Rank, produce: Callable[[], T], what: str) -> T:
    """produce() on rank 0 and its result on every rank; when it fails there, the other ranks raise PeerFailure.

    Only the exception's type travels, never its message (which could quote a location or a request).
    """
    if not rank.distributed:
        return produce()
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank.is_main:
        try:
            box[0] = ("ok", produce())
        except BaseException as exc:
            box[0] = ("failed", type(exc).__name__)
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status != "ok":
        raise PeerFailure(f"rank 0 failed ({value}) while {what}")
    return value


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over all ranks (the values themselves in a single process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def is_peer_failure(exc: BaseException) -> bool:
    """Whether the error says another rank went away rather than what went wrong here."""
    if isinstance(exc, PeerFailure):
        return True
    try:
        import torch.distributed as dist

        if isinstance(exc, dist.DistError):
            return True
    except ImportError:  # pragma: no cover - torch is always there in the job
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _PEER_LOST_MARKERS)


# ---- rank status records ---------------------------------------------------------------------------------------

RUNNING, COMPLETED, INTERRUPTED, FAILED, PEER_LOST = "running", "completed", "interrupted", "failed", "peer_lost"


def status_dir(default: Path) -> Path:
    """Where the ranks record their state: GOVERNED_FT_RANK_STATUS_DIR, else default."""
    return Path(os.environ.get(RANK_STATUS_DIR_ENV) or default)


def write_status(directory: Path, rank: Rank, state: str, error: str | None = None) -> None:
    """Record this rank's state (atomically: a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank.rank, "local_rank": rank.local_rank, "host": rank.host, "world_size": rank.world_size,
              "pid": os.getpid(), "state": state, "error": error, "time": time.time()}
    partial = directory / f".rank-{rank.rank}.json.partial"
    partial.write_text(json.dumps(record))
    os.replace(partial, directory / f"rank-{rank.rank}.json")


def read_statuses(directory: Path) -> dict[int, dict[str, Any]]:
    """Each rank's last recorded state, by rank."""
    found: dict[int, dict[str, Any]] = {}
    if directory.is_dir():
        for path in directory.glob("rank-*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            found[int(record["rank"])] = record
    return found


def explain_failure(statuses: Mapping[int, Mapping[str, Any]], world_size: int,
                    exit_codes: Mapping[int, int] | None = None) -> str | None:
    """The rank that caused a failed job and how, in one sentence; None when nothing names a cause.

    A rank that failed with its own error is the cause (the earliest one). Otherwise the cause is a rank that never
    recorded an end: killed by a signal when the launcher saw one (exit_codes, negative for a signal), else silent.
    Ranks that lost their peers only followed.
    """
    failed = sorted((s for s in statuses.values() if s.get("state") == FAILED), key=lambda s: s.get("time", 0))
    if failed:
        first = failed[0]
        return f"{_label(first)} failed: {first.get('error') or 'no error text'}"
    codes = dict(exit_codes or {})
    silent = [r for r in range(world_size) if statuses.get(r, {}).get("state", RUNNING) == RUNNING]
    # torchrun stops the ranks still running with SIGTERM: a rank that another signal ended came first.
    signalled = [r for r in silent if codes.get(r, 0) < 0]
    causes = [r for r in signalled if codes[r] != -signal.SIGTERM] or signalled or silent
    if not causes:
        return None
    followers = sorted(r for r, s in statuses.items() if s.get("state") == PEER_LOST)
    tail = f"; {_ranks(followers)} then lost contact and stopped" if followers else ""
    return "; ".join(_silent_end(r, statuses.get(r), codes.get(r)) for r in causes) + tail


def _silent_end(rank: int, status: Mapping[str, Any] | None, exit_code: int | None) -> str:
    if status is None:
        return f"rank {rank} ended before recording anything (it failed while starting; see its stderr lines)"
    how = "died"
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = "an unknown signal"
        how = f"was killed by signal {-exit_code} ({name})"
    return (f"{_label(status)}, pid {status.get('pid')}, {how} without reporting an error (the out-of-memory killer, "
            "or a kill from outside)")


def _label(status: Mapping[str, Any]) -> str:
    return rank_label(int(status["rank"]), status.get("local_rank"), status.get("host"))


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)
