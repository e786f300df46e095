"""torchrun as SageMaker's torch_distributed runs it, keeping how each failed rank exited.

`python -m governed_ft_dagster.training.launch --exits FILE <torchrun arguments> script [script arguments]` runs
torchrun itself (its own argument parser and elastic launch). When ranks fail it writes
{rank: {"local_rank", "pid", "exitcode"}} to FILE, so the launcher can tell a rank killed by a signal from the
ranks that only lost it, and exits 1 as torchrun does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def torchrun_arguments(nnodes: int, nproc_per_node: int, node_rank: int = 0, master_addr: str | None = None,
                       master_port: int | None = None) -> list[str]:
    """The options SageMaker's TorchDistributedRunner passes (master and node rank only with several nodes)."""
    options = ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node)]
    if nnodes > 1:
        options += ["--master_addr", str(master_addr), "--master_port", str(master_port), "--node_rank",
                    str(node_rank)]
    return options


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--exits":
        print("usage: python -m governed_ft_dagster.training.launch --exits FILE <torchrun arguments>",
              file=sys.stderr)
        return 2
    exits, torchrun_argv = Path(argv[1]), argv[2:]
    try:
        run(parse_args(torchrun_argv))
    except ChildFailedError as failed:
        exits.parent.mkdir(parents=True, exist_ok=True)
        exits.write_text(json.dumps({str(rank): {"local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode}
                                     for rank, f in failed.failures.items()}))
        print(f"torchrun: {len(failed.failures)} rank(s) failed: "
              + ", ".join(f"rank {rank} exit code {f.exitcode}" for rank, f in sorted(failed.failures.items())),
              file=sys.stderr, flush=True)
        return 1
    except SignalException as stopped:  # the launcher was stopped; torchrun has stopped its ranks
        print(f"torchrun: stopped by {stopped.sigval.name}", file=sys.stderr, flush=True)
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
