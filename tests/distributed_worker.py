"""Entry point of the multi-process tests (tests/test_distributed.py): one RLAIF-V run, as 1 process or under torchrun.

    python tests/distributed_worker.py RUN_DIR CONFIG.json REPORT_DIR                                  # 1 process
    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py RUN_DIR CONFIG.json REPORT_DIR

CONFIG.json holds ``RLAIFVConfig`` keyword arguments (nested configs as dicts). Each process writes
``REPORT_DIR/rank<k>.json`` (its rank, the launch's world size, whether it was the run directory's writer) once the
run is finished. With ``RLAIFV_TEST_KILL=RANK:ARTIFACT`` in the environment, process RANK SIGKILLs itself right after
``RUN_DIR/ARTIFACT`` is finished (every rank is told of every finished artifact, after the writer's barrier).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from resume_worker import config_from_dict, kill_after
from rlaifv_lib import distributed
from rlaifv_lib.pipeline import RLAIFVRun


def main(run_dir: str, config: str, report_dir: str) -> None:
    """Run or resume ``run_dir`` with the configuration in ``config``; report this process's role."""
    torch.set_num_threads(1)
    kill = os.environ.get("RLAIFV_TEST_KILL")
    on_written = None
    if kill:
        kill_rank, target = kill.split(":", 1)
        if int(os.environ.get("RANK", "0")) == int(kill_rank):
            on_written = kill_after(run_dir, target)
    run = RLAIFVRun(run_dir, config_from_dict(json.loads(Path(config).read_text())), progress=False, on_written=on_written)
    run.run()
    Path(report_dir).mkdir(parents=True, exist_ok=True)
    role = {"rank": distributed.rank(), "world_size": distributed.world_size(), "writer": run.rd.writer}
    (Path(report_dir) / f"rank{role['rank']}.json").write_text(json.dumps(role))
    distributed.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:4])
