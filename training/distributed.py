"""Multi-process training (DistributedDataParallel): the process group from torchrun's environment.

`torchrun --nproc-per-node N -m rtdecode train --ddp ...` starts N processes; each reads RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, joins one process group
(gloo on the CPU, NCCL on CUDA GPUs, one GPU per LOCAL_RANK) and trains the same model on its own
shard of every epoch (`EpochSampler`); DDP averages the gradients, so every rank holds the same
weights after every step and only rank 0 writes checkpoints, logs and the progress bar.

`DistContext` is what the training loop sees: SINGLE (one process, no process group) behaves
exactly like the loop without this module, so one code path serves both.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from rtdecode.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "launch with: torchrun --nproc-per-node N -m rtdecode train --ddp --data ..."


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among world_size, its device; backend None = one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: str = "cpu"  # cpu | cuda (cuda means cuda:local_rank)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and shows progress."""
        return self.rank == 0

    def torch_device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.device == "cuda" and self.enabled else torch.device(self.device)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def wrap(self, module: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
        """The module in DistributedDataParallel (gradients averaged over ranks), or itself alone."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None,
                                       find_unused_parameters=find_unused_parameters)

    def sampler(self, n: int, seed: int) -> EpochSampler:
        return EpochSampler(n, seed=seed, rank=self.rank, world_size=self.world_size)

    def check_in_sync(self, module: nn.Module, step: int) -> str:
        """Raise if any rank's parameters differ from rank 0's; returns the (common) digest.

        DDP keeps the weights identical by construction; what runs outside it (the RF clamp, EMA,
        per-group learning rates) must too. A divergence would be hidden by rank 0's checkpoint.
        """
        digest = param_digest(module)
        if not self.enabled:
            return digest
        digests: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(digests, digest)
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        if bad:
            raise ModelError(f"DDP ranks diverged at step {step}: the parameters of rank(s) {bad} differ from "
                             "rank 0's (every rank must apply the same updates)")
        return digest


SINGLE = DistContext()


class EpochSampler(DistributedSampler):
    """DistributedSampler whose epoch order is the single-process one, sharded rank::world_size.

    The order of epoch e is numpy's permutation seeded (seed, e) - what `train` always used - so
    one process (world_size 1) sees exactly the batches of a run without DDP. drop_last: the at
    most world_size - 1 samples past an even split are left out of that epoch (a different few
    each epoch), so the shards are disjoint and of equal length.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(range(int(n)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def order(self) -> np.ndarray:
        """This rank's sample indices of the current epoch (set_epoch)."""
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset))  # type: ignore[arg-type]
        return perm[:self.total_size][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())


def param_digest(module: nn.Module) -> str:
    """sha256 of every parameter's bytes (CPU copies), in registration order."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def torchrun_env(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The launcher's variables (ints where they are ints), None when none is set; partial sets are errors."""
    env = os.environ if environ is None else environ
    present = [k for k in ENV_VARS if k in env]
    if not present:
        return None
    missing = [k for k in ENV_VARS if k not in env]
    if missing:
        raise ConfigError(f"distributed training: {missing} not set but {present} are; torchrun sets all of "
                          f"{list(ENV_VARS)}; {LAUNCH_HINT}")
    out: dict[str, Any] = {"MASTER_ADDR": env["MASTER_ADDR"]}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        if k not in env:
            continue
        try:
            out[k] = int(env[k])
        except ValueError:
            raise ConfigError(f"distributed training: {k}={env[k]!r} is not an integer") from None
    out.setdefault("LOCAL_WORLD_SIZE", out["WORLD_SIZE"])
    if not (out["WORLD_SIZE"] >= 1 and 0 <= out["RANK"] < out["WORLD_SIZE"]
            and 0 <= out["LOCAL_RANK"] < out["LOCAL_WORLD_SIZE"]):
        raise ConfigError(f"distributed training: RANK={out['RANK']}, LOCAL_RANK={out['LOCAL_RANK']} do not fit "
                          f"WORLD_SIZE={out['WORLD_SIZE']}, LOCAL_WORLD_SIZE={out['LOCAL_WORLD_SIZE']}")
    return out


def check_launch(ddp: bool, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The torchrun environment when it fits the --ddp flag; a clear error when it does not."""
    env = torchrun_env(environ)
    if ddp and env is None:
        raise ConfigError(f"--ddp needs the process-group variables {list(ENV_VARS)} that torchrun sets; none is "
                          f"set (started without torchrun?); {LAUNCH_HINT}")
    if not ddp and env is not None and env["WORLD_SIZE"] > 1:
        raise ConfigError(f"started as rank {env['RANK']} of {env['WORLD_SIZE']} processes (torchrun) without "
                          "--ddp: every process would train its own copy and write the same files; add --ddp")
    return env if ddp else None


def init_from_env(device: str = "cpu", environ: Mapping[str, str] | None = None,
                  timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes: gloo for device cpu, NCCL (one GPU per LOCAL_RANK) for cuda."""
    env = check_launch(True, environ)
    assert env is not None
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--ddp --device cuda: torch sees no CUDA GPU; use --device cpu (gloo)")
        if env["LOCAL_RANK"] >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {env['LOCAL_RANK']} but only {torch.cuda.device_count()} GPU(s) on this "
                              "machine: --nproc-per-node must not exceed the GPUs")
        torch.cuda.set_device(env["LOCAL_RANK"])
        backend = "nccl"
    else:
        backend = "gloo"
    if environ is not None:  # init_process_group's env:// reads os.environ
        os.environ.update({k: str(environ[k]) for k in ENV_VARS})
    torch.distributed.init_process_group(backend, rank=env["RANK"], world_size=env["WORLD_SIZE"],
                                         timeout=timedelta(seconds=timeout_s))
    ctx = DistContext(env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], backend, device)
    if not ctx.is_main:  # one process speaks: the others log warnings and errors only
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    log.info("DDP: rank %d of %d (local %d), backend %s, master %s:%s", ctx.rank, ctx.world_size, ctx.local_rank,
             backend, env["MASTER_ADDR"], env["MASTER_PORT"])
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def distributed(ddp: bool, device: str = "cpu", environ: Mapping[str, str] | None = None) -> Iterator[DistContext]:
    """SINGLE without ddp (after checking that no multi-process launch forgot --ddp), else the joined group."""
    if not ddp:
        check_launch(False, environ)
        yield SINGLE
        return
    ctx = init_from_env(device, environ)
    try:
        yield ctx
    finally:
        teardown(ctx)
