"""A trainer launch in which rank 1 dies: `torchrun ... -m sigma_assets_tests.failing_rank -m
sigma_assets.training.train --spec ...` runs the trainer on rank 0 and raises on rank 1 (test_training)."""

from __future__ import annotations

import os
import runpy
import sys

from torch.distributed.elastic.multiprocessing.errors import record


@record
def main() -> None:
    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank 1 ran out of memory (a test's failure)")
    module = sys.argv[sys.argv.index("-m") + 1]
    sys.argv = [module, *sys.argv[sys.argv.index("-m") + 2 :]]
    runpy.run_module(module, run_name="__main__")


if __name__ == "__main__":
    main()
