"""One rank of a test DDP run, started by torchrun from tests/test_ddp.py (not a test module itself).

usage: torchrun --nproc-per-node N tests/ddp_worker.py OUT CONFIG_JSON
Records this rank's epoch shards as the process group saw them (all_gather), trains the tiny model
of tests/test_train_export.py into OUT/rank<r>, records what the rank sync check says of a net
whose rank-1 copy was perturbed, and writes OUT/rank<r>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from test_train_export import tiny_config, tiny_data  # this script's folder is on sys.path

from rtdecode.errors import ModelError
from rtdecode.training.distributed import distributed
from rtdecode.training.train import train


def main(out: Path, config_kw: dict) -> None:
    torch.set_num_threads(1)
    with distributed(True, "cpu") as dist:
        rec: dict = {"rank": dist.rank, "world": dist.world_size}
        sampler = dist.sampler(48, seed=0)
        rec["shards"] = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            gathered: list = [None] * dist.world_size
            torch.distributed.all_gather_object(gathered, sampler.order().tolist())
            rec["shards"].append(gathered)
        result = train(tiny_data(), tiny_config(**config_kw), out / f"rank{dist.rank}", progress=False, dist=dist)
        rec.update(step=result.step, digest=result.params_sha256, history=len(result.history))
        # the rank sync check catches weights that differ: perturb rank 1's copy of a small net
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        dist.check_in_sync(net, 0)  # the same weights: passes
        if dist.rank == 1:
            with torch.no_grad():
                net.weight[0, 0] += 1e-6
        try:
            dist.check_in_sync(net, 5)
        except ModelError as e:
            rec["diverged_error"] = str(e)
        (out / f"rank{dist.rank}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
