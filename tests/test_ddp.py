"""Multi-process training (training/distributed.py): real gloo process groups on 127.0.0.1.

The multi-process tests start real processes with torchrun (tests/ddp_worker.py, and the CLI),
one torch thread each; they are slow because every process imports torch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdecode.cli import main as cli_main
from rtdecode.errors import ConfigError
from rtdecode.sim.macaque import VirtualMacaque
from rtdecode.training.checkpoint import load_checkpoint
from rtdecode.training.distributed import (
    EpochSampler,
    check_launch,
    param_digest,
    torchrun_env,
)
from rtdecode.training.model import HomeomorphicDecoder
from rtdecode.training.train import build_model, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train_export import tiny_config, tiny_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """The in-process runs set torch's threads (num_threads=1); give the next test its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_vars(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def checkpoint_digest(path: Path) -> str:
    """param_digest of the trained (raw) weights stored in a checkpoint."""
    ckpt = load_checkpoint(path)
    model = HomeomorphicDecoder.from_args(json.loads(ckpt["model_args"]))
    model.load_state_dict(ckpt["model_raw"] if ckpt.get("model_raw") is not None else ckpt["model"])
    return param_digest(model)


# ---- one process: the sampler and the launch checks ------------------------------------------
def test_one_rank_sees_the_plain_epoch_order():
    s = EpochSampler(50, seed=3)
    for epoch in (0, 1, 7):
        s.set_epoch(epoch)
        np.testing.assert_array_equal(s.order(), np.random.default_rng([3, epoch]).permutation(50))
        assert list(s) == s.order().tolist() and len(s) == 50


def test_ranks_get_disjoint_equal_shards_of_each_epoch():
    for n, world in ((48, 2), (49, 2), (50, 3)):
        shards = [EpochSampler(n, seed=0, rank=r, world_size=world) for r in range(world)]
        for epoch in (0, 1):
            orders = []
            for s in shards:
                s.set_epoch(epoch)
                orders.append(s.order())
            flat = np.concatenate(orders)
            assert len(set(flat.tolist())) == flat.size == (n // world) * world  # disjoint, at most world-1 left out
            assert {len(o) for o in orders} == {n // world}
        assert not np.array_equal(orders[0], np.sort(orders[0]))  # shuffled


def test_launch_checks_name_what_is_wrong():
    with pytest.raises(ConfigError, match="torchrun"):
        check_launch(True, {})
    with pytest.raises(ConfigError, match=r"without --ddp"):
        check_launch(False, torchrun_vars(1, 2, 29500))
    assert check_launch(False, torchrun_vars(0, 1, 29500)) is None  # torchrun with one process: a plain run
    partial = {"RANK": "0", "WORLD_SIZE": "2"}
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        torchrun_env(partial)
    with pytest.raises(ConfigError, match="RANK=2"):
        torchrun_env(torchrun_vars(2, 2, 29500))
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        torchrun_env({**torchrun_vars(0, 2, 29500), "WORLD_SIZE": "two"})
    assert check_launch(True, torchrun_vars(1, 2, 29500))["RANK"] == 1


def test_cli_ddp_without_torchrun_fails_before_reading_data(tmp_path, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert cli_main(["train", "--ddp", "--data", str(tmp_path / "absent.h5"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--ddp needs" in err and "torchrun --nproc-per-node" in err and "absent.h5" not in err
    assert not (tmp_path / "r").exists()


# ---- real process groups (torchrun, gloo, 127.0.0.1) -------------------------------------------
def clean_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LSLAPICFG": str(ROOT / "deploy" / "lsl_api.cfg"),
           "GLOO_SOCKET_IFNAME": "lo"}  # gloo's connections on loopback (MASTER_ADDR is 127.0.0.1)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]


def spawn(world: int, out: Path, config_kw: dict) -> list[dict]:
    """Run tests/ddp_worker.py on `world` ranks; their records."""
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(torchrun(world, str(Path(__file__).parent / "ddp_worker.py"), str(out),
                                json.dumps(config_kw)), env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
def test_one_ddp_process_trains_bitwise_like_a_plain_run(tmp_path):
    """World size 1: DDP's all-reduce of one process and its division by 1 are exact, the batches are
    the plain run's (EpochSampler) and rank 0 keeps the plain RNG stream: the weights are bitwise equal."""
    kw = dict(max_steps=6, val_every=3, w_rf_encode=1.0, ema=0.9, input_noise=0.1)
    rec = spawn(1, tmp_path / "ddp", kw)[0]
    plain = train(tiny_data(), tiny_config(**kw), tmp_path / "plain", progress=False)
    a = load_checkpoint(tmp_path / "ddp" / "rank0" / "last.pt")
    b = load_checkpoint(plain.last)
    for part in ("model", "model_raw", "disc", "rf_head"):
        for k in b[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert rec["digest"] == plain.params_sha256 == checkpoint_digest(plain.last)
    assert json.loads(a["data"])["processes"] == 1


@pytest.mark.slow
def test_two_processes_shard_the_data_stay_in_sync_and_only_rank0_writes(tmp_path):
    kw = dict(max_steps=6, val_every=3, w_rf_encode=1.0, batch_size=4)
    recs = spawn(2, tmp_path, kw)
    for epoch in recs[0]["shards"]:  # each rank's shard, as the real process group saw them
        a, b = (set(s) for s in epoch)
        assert not a & b and len(a) == len(b) == 24 and a | b == set(range(48))
    assert recs[0]["shards"] == recs[1]["shards"]
    assert [r["step"] for r in recs] == [6, 6]
    # gradients averaged by DDP: both ranks end with the same weights, those of rank 0's checkpoint
    assert recs[0]["digest"] == recs[1]["digest"] == checkpoint_digest(tmp_path / "rank0" / "last.pt")
    ckpt = load_checkpoint(tmp_path / "rank0" / "last.pt")
    assert json.loads(ckpt["data"])["effective_batch_size"] == 8
    assert len((tmp_path / "rank0" / "history.jsonl").read_text().splitlines()) == 2
    assert {p.name for p in (tmp_path / "rank0").iterdir()} >= {"best.pt", "last.pt", "config.json", "history.jsonl"}
    assert list((tmp_path / "rank1").iterdir()) == []  # rank 1 wrote nothing
    for r in recs:  # had a rank's weights differed, every rank would have said so
        assert "rank(s) [1] differ" in r["diverged_error"] and "step 5" in r["diverged_error"]


@pytest.mark.slow
def test_two_processes_with_frozen_rfs_use_ddp_unused_parameter_search(tmp_path):
    """rf_decoder_grad off and no RF loss: the RF parameters get no gradient; DDP must not hang."""
    recs = spawn(2, tmp_path, dict(max_steps=3, val_every=3, w_adv=0.0, rf_decoder_grad=False, batch_size=4))
    assert recs[0]["digest"] == recs[1]["digest"] and recs[0]["step"] == 3
    ckpt = load_checkpoint(tmp_path / "rank0" / "last.pt")
    model = HomeomorphicDecoder.from_args(json.loads(ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    init = build_model(tiny_data(), tiny_config())
    assert torch.equal(model.rf.centres, init.rf.centres)  # the RFs did not move
    assert not torch.equal(model.generator.head[0].weight, init.generator.head[0].weight)  # the U-Net did


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path):
    session = tmp_path / "s.h5"
    VirtualMacaque(seed=0, image_size=32).simulate_session(session, n_images=40, known_rfs=True, progress=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"image_size": 32, "widths": [8, 16, 32], "disc_widths": [8, 16], "num_threads": 1}))
    env = clean_env()
    run = torchrun(2, "-m", "rtdecode", "-v", "train", "--data", str(session), "--config", str(cfg), "--max-steps",
                   "4", "--batch-size", "4", "--out", str(tmp_path / "run"), "--no-progress")
    r = subprocess.run([*run, "--ddp"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("trained 4 steps") == 1  # rank 0 alone reports
    assert r.stderr.count("val L1") == 1 and "DDP: 2 processes (gloo), batch 4 each, effective 8" in r.stderr
    assert "the 2 ranks hold identical parameters" in r.stderr
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "run" / "rf_recovery.json").exists()
    # a process of a torchrun launch (its variables) without --ddp: refused before any training
    no = [sys.executable, "-m", "rtdecode", "train", "--data", str(session), "--out", str(tmp_path / "no")]
    r = subprocess.run(no, cwd=tmp_path, env={**env, **torchrun_vars(1, 2, free_port())}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "rank 1 of 2 processes (torchrun) without --ddp" in r.stderr
    assert not (tmp_path / "no").exists()
