"""Training loop of the homeomorphic decoder (pix2pix-style, with optional discriminator).

`train(data, config, out_dir)` fits a HomeomorphicDecoder on a DecodingData: Adam (2e-4, betas
0.5/0.999), seeded, tqdm progress, periodic validation (L1, pixel correlation) with a log line,
`last.pt` at every validation and `best.pt` at the best validation metric. `resume=` continues a
run from a checkpoint at the exact step (the epoch order is a function of seed and epoch).

`dist=` (training/distributed.py) trains in one of several DDP processes: each takes its shard
of every epoch, `GeneratorStep` / `DiscriminatorStep` run under DistributedDataParallel (one
forward and one backward each per step, so DDP averages every gradient once), rank 0 validates
and writes. With one process (SINGLE, or DDP with one rank) the steps are those of a plain run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from rtdecode.errors import ConfigError
from rtdecode.metrics import rf_recovery
from rtdecode.progress import progress_bar

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import SINGLE, DistContext
from .losses import DecoderLoss, ImagePool
from .model import HomeomorphicDecoder, PatchDiscriminator, count_parameters
from .rf_learning import RFEncodingHead, initial_rfs, rf_anchor_loss
from .rf_report import format_rf_report, other_monkey_centres, rf_report

log = logging.getLogger(__name__)
N_SAMPLE_INPUTS = 4


@dataclass
class TrainResult:
    """Where the checkpoints are and how the run went."""

    out_dir: Path
    best: Path
    last: Path
    step: int
    best_metric: float
    history: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    rf_recovery: dict[str, Any] | None = None  # training/rf_report.py; None without true RFs
    params_sha256: str = ""  # of the trained parameters; under DDP checked equal on every rank


def pick_device(name: str, dist: DistContext = SINGLE) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU "
                              f"(torch {torch.__version__}, cuda build: {torch.version.cuda}); use --device cpu")
        return dist.torch_device() if dist.enabled else torch.device("cuda")
    return torch.device("cpu")


def set_threads(n: int, processes: int = 1) -> int:
    """Use n threads (0: min(2, cores / processes on this machine)); this project's boxes have 2 cores."""
    n = n or max(1, min(2, (os.cpu_count() or 1) // max(1, processes)))
    torch.set_num_threads(n)
    return n


def build_model(data: Any, config: TrainConfig) -> HomeomorphicDecoder:
    """A decoder for this data; its RFs start as `config.rf_init` says (training/rf_learning.py)."""
    h, w = data.image_size
    if h != w or h != config.image_size:
        raise ConfigError(f"data images are {h}x{w} but the config wants image_size={config.image_size}; "
                          "load the data with the same image_size")
    model = HomeomorphicDecoder(data.n_maps, data.n_electrodes, config.image_size, config.widths,
                                rf_normalise=config.rf_normalise, rf_norm_eps=config.rf_norm_eps,
                                learn_rf=config.learn_rf, dropout=config.dropout, mask=data.mask)
    known_sigmas = None
    if data.layout.rf_sigmas is not None:
        known_sigmas = np.asarray(data.layout.rf_sigmas, dtype=np.float64)[data.layout.used_channels]
    centres, sigmas = initial_rfs(config.rf_init, data.n_electrodes, data.layout.electrode_areas(),
                                  known_centres=data.rf_known, known_sigmas=known_sigmas,
                                  sigma_per_area=config.rf_sigma_init, broad_sigma=config.rf_init_sigma)
    model.rf.init_rf(centres, sigmas)
    return model


def pixel_corr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation over all pixels and channels -> [B]."""
    p = pred.flatten(1) - pred.flatten(1).mean(1, keepdim=True)
    t = target.flatten(1) - target.flatten(1).mean(1, keepdim=True)
    return (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-8)


@torch.no_grad()
def predict(model: HomeomorphicDecoder, x: np.ndarray, device: torch.device, batch: int = 64) -> torch.Tensor:
    was = model.training
    model.eval()
    out = [model(torch.as_tensor(x[i:i + batch], device=device)).cpu() for i in range(0, len(x), batch)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def validate(model: HomeomorphicDecoder, x: np.ndarray, y: np.ndarray, device: torch.device) -> dict[str, float]:
    pred = predict(model, x, device)
    target = torch.as_tensor(y)
    return {"l1": float((pred - target).abs().mean()), "pixel_corr": float(pixel_corr(pred, target).mean())}


def _lr_factor(step: int, total: int, decay_from: float) -> float:
    start = decay_from * total
    if decay_from >= 1.0 or step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / max(1.0, total - start))


class GeneratorStep(nn.Module):
    """One generator-side forward: painted maps, the fake image and the RF layer's own loss (or None).

    One module so that DDP sees one forward and one backward per step: the decoder's loss and the
    RF loss are summed before backward (the gradients are those of the two backward passes the loop
    once made). rf_decoder_grad=False paints with detached RF parameters: the decoder's loss then
    does not move the RFs, only the RF loss does.
    """

    def __init__(self, model: HomeomorphicDecoder, rf_head: RFEncodingHead | None, anchor: torch.Tensor,
                 config: TrainConfig):
        super().__init__()
        self.model, self.rf_head = model, rf_head
        self.register_buffer("anchor", anchor.clone(), persistent=False)
        self.w_rf_anchor, self.w_rf_encode = config.w_rf_anchor, config.w_rf_encode
        self.rf_decoder_grad = config.rf_decoder_grad

    @property
    def has_rf_loss(self) -> bool:
        return self.rf_head is not None or self.w_rf_anchor > 0

    @property
    def may_leave_parameters_unused(self) -> bool:
        """True when the RF parameters can get no gradient in a step (DDP must then look for them)."""
        return not self.rf_decoder_grad and not self.has_rf_loss

    def forward(self, x_in: torch.Tensor, x: torch.Tensor,
                y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rf = self.model.rf
        if self.rf_decoder_grad:
            maps = rf(x_in)
        else:
            maps = functional_call(rf, {"centres": rf.centres.detach(), "log_sigma": rf.log_sigma.detach()}, (x_in,))
        fake = self.model.generator(maps)
        rf_loss = None
        if self.has_rf_loss:
            rf_loss = self.w_rf_anchor * rf_anchor_loss(rf.centres, self.anchor)
            if self.rf_head is not None:
                rf_loss = rf_loss + self.w_rf_encode * self.rf_head.loss(rf, x, y)
        return maps, fake, rf_loss


class DiscriminatorStep(nn.Module):
    """The discriminator's two forwards of a step (real pair, pooled fake pair) as one DDP forward."""

    def __init__(self, disc: PatchDiscriminator):
        super().__init__()
        self.disc = disc

    def forward(self, maps: torch.Tensor, real: torch.Tensor, pool_maps: torch.Tensor,
                pool_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.disc(maps, real), self.disc(pool_maps, pool_fake)


def train(data: Any, config: TrainConfig, out_dir: str | Path, *, resume: str | Path | None = None,
          progress: bool = True, data_info: dict[str, Any] | None = None,
          dist: DistContext = SINGLE) -> TrainResult:
    """Fit the decoder on `data` (a training.data.DecodingData); checkpoints go to out_dir.

    dist: this process's place in a DDP run (training/distributed.py); config.batch_size is then
    per process, the effective batch world_size times that, and only rank 0 writes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = dist.is_main
    progress = progress and main
    threads = set_threads(config.num_threads, dist.local_world_size)
    device = pick_device(config.device, dist)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2 ** 32))

    model = build_model(data, config).to(device)
    init_centres = model.rf_centres().cpu().numpy()  # the start, also when resuming (the init is deterministic)
    anchor = model.rf_centres()
    losses = DecoderLoss(config.w_adv, config.w_vgg, config.w_l1, config.w_mse, config.vgg_weights).to(device)
    disc = PatchDiscriminator(data.n_maps + 3, config.disc_widths).to(device) if losses.uses_discriminator else None
    ema = None
    if config.ema > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
    rf_params = [model.rf.centres, model.rf.log_sigma]
    gen_params = [p for n, p in model.named_parameters() if not n.startswith("rf.")]
    rf_head = RFEncodingHead(data.mask).to(device) if config.w_rf_encode > 0 else None
    groups = [{"params": gen_params, "lr": config.lr}, {"params": rf_params, "lr": config.lr * config.rf_lr_scale}]
    if rf_head is not None:  # a third group only then: older checkpoints' optimiser states still load
        groups.append({"params": list(rf_head.parameters()), "lr": config.lr * config.rf_lr_scale})
    opt_g = torch.optim.Adam(groups, betas=(config.beta1, config.beta2))
    opt_d = (torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
             if disc is not None else None)
    base_lrs = [g["lr"] for g in opt_g.param_groups]
    pool = ImagePool(config.pool_size, seed=config.seed)

    n_train = int(data.train_x.shape[0])
    if n_train == 0:
        raise ConfigError("the training split is empty")
    if n_train < dist.world_size:
        raise ConfigError(f"the training split has {n_train} samples, fewer than the {dist.world_size} DDP processes")
    sampler = dist.sampler(n_train, config.seed)
    steps_per_epoch = max(1, sampler.num_samples // config.batch_size)
    total = config.max_steps if config.max_steps > 0 else config.epochs * steps_per_epoch
    val_every = config.val_every or steps_per_epoch
    has_val = data.val_x.shape[0] > 0
    val_x, val_y = (data.val_x, data.val_y) if has_val else (data.train_x[:64], data.train_y[:64])
    sample_inputs = val_x[:N_SAMPLE_INPUTS]
    higher_better = config.val_metric == "pixel_corr"
    step, best, history = 0, (-math.inf if higher_better else math.inf), []

    if resume is not None:
        ckpt = load_checkpoint(resume)
        model.load_state_dict(ckpt["model_raw"] if ckpt.get("model_raw") is not None else ckpt["model"])
        if ema is not None:
            ema.load_state_dict(ckpt["model"])
        if disc is not None and ckpt.get("disc") is not None:
            disc.load_state_dict(ckpt["disc"])
        if rf_head is not None and ckpt.get("rf_head") is not None:
            rf_head.load_state_dict(ckpt["rf_head"])
        if ckpt.get("opt_g") is not None:
            opt_g.load_state_dict(ckpt["opt_g"])
        if opt_d is not None and ckpt.get("opt_d") is not None:
            opt_d.load_state_dict(ckpt["opt_d"])
        step = int(ckpt["step"])
        if ckpt.get("best_metric") is not None:
            best = float(ckpt["best_metric"])
        history = json.loads(ckpt.get("history") or "[]")
        if ckpt.get("torch_rng") is not None:
            torch.set_rng_state(ckpt["torch_rng"])
        log.info("resumed from %s at step %d", resume, step)
    if dist.rank > 0:  # noise and dropout differ between ranks; rank 0 keeps the stream of a plain run
        torch.manual_seed(int(np.random.SeedSequence([config.seed, dist.rank, step]).generate_state(1)[0]))

    gen_step = GeneratorStep(model, rf_head, anchor, config).to(device)
    gen_run = dist.wrap(gen_step, find_unused_parameters=gen_step.may_leave_parameters_unused)
    disc_run = dist.wrap(DiscriminatorStep(disc)) if disc is not None else None

    info = {"source": str(getattr(data, "source", "")), "windows": data.plan.preset, "image_size": config.image_size,
            "split": list(config.split), "data_seed": config.data_seed, "n_train": n_train,
            "n_val": int(data.val_x.shape[0]), "n_test": int(data.test_x.shape[0]), "processes": dist.world_size,
            "effective_batch_size": config.batch_size * dist.world_size, **(data_info or {})}
    common = {"config": config, "norm_mean": data.normaliser.mean, "norm_std": data.normaliser.std,
              "layout_json": data.layout.to_json(), "plan_json": data.plan.to_json(), "data_info": info,
              "sample_inputs": sample_inputs}
    best_path, last_path = out / "best.pt", out / "last.pt"
    if main:
        (out / "config.json").write_text(config.to_json())
    log.info("training %s: %d parameters (+%s discriminator), %d train samples, %d steps/epoch, %d steps, "
             "device %s, %d threads%s", config.preset, count_parameters(model),
             count_parameters(disc) if disc is not None else 0, n_train, steps_per_epoch, total, device, threads,
             f"; DDP: {dist.world_size} processes ({dist.backend}), batch {config.batch_size} each, effective "
             f"{config.batch_size * dist.world_size}" if dist.enabled else "")

    x_all = torch.as_tensor(data.train_x)
    y_all = torch.as_tensor(data.train_y)
    bar = progress_bar(total, "train", enabled=progress, unit="step", initial=step, leave=True, mininterval=1.0)
    t0 = time.perf_counter()
    running: dict[str, float] = {}
    model.train()
    shard_epoch, shard = -1, np.zeros(0, dtype=np.int64)
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        if epoch != shard_epoch:
            sampler.set_epoch(epoch)
            shard_epoch, shard = epoch, sampler.order()
        idx = shard[within * config.batch_size:(within + 1) * config.batch_size]
        x = x_all[idx].to(device, non_blocking=True)
        y = y_all[idx].to(device, non_blocking=True)
        x_in = x + config.input_noise * torch.randn_like(x) * model.rf.mask if config.input_noise > 0 else x
        factor = _lr_factor(step, total, config.lr_decay_from)
        for i, (g, lr) in enumerate(zip(opt_g.param_groups, base_lrs, strict=True)):
            g["lr"] = 0.0 if i == 1 and step < config.rf_hold_steps else lr * factor
        if opt_d is not None:
            for g in opt_d.param_groups:
                g["lr"] = config.lr * factor

        maps, fake, rf_loss = gen_run(x_in, x, y)
        parts: dict[str, float] = {}
        if disc is not None and opt_d is not None and disc_run is not None:
            pm, pf = pool.query(maps, fake)
            d_loss = losses.discriminator(*disc_run(maps.detach(), y, pm, pf))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["d"] = float(d_loss.detach())
            disc.requires_grad_(False)  # the plain module: its parameters take no part in this backward
            g_loss, gparts = losses.generator(fake, y, disc(maps.detach(), fake))
            disc.requires_grad_(True)
        else:
            g_loss, gparts = losses.generator(fake, y)
        opt_g.zero_grad(set_to_none=True)
        total_loss = g_loss
        if rf_loss is not None:  # the RF layer's own objective
            parts["rf"] = float(rf_loss.detach())
            if rf_loss.requires_grad:
                total_loss = g_loss + rf_loss
        total_loss.backward()
        opt_g.step()
        with torch.no_grad():
            model.rf.centres.clamp_(-0.25, 1.25)
            model.rf.log_sigma.clamp_(math.log(0.5 / config.image_size), math.log(1.0))
        if ema is not None:
            _ema_update(ema, model, min(config.ema, (1.0 + step) / (10.0 + step)))
        parts.update(gparts)
        parts["g"] = float(g_loss.detach())
        for k, v in parts.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        step += 1
        bar.update(1)
        if step % config.log_every == 0:
            bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()})
            if not progress:
                log.info("step %d/%d %s", step, total, " ".join(f"{k}={v:.4f}" for k, v in running.items()))

        if (step % val_every == 0 or step == total) and dist.enabled:
            dist.check_in_sync(model, step)  # every rank takes part
        if (step % val_every == 0 or step == total) and main:
            metrics = validate(ema if ema is not None else model, val_x, val_y, device)
            rec = {"step": step, "epoch": step / steps_per_epoch, "time_s": round(time.perf_counter() - t0, 3),
                   **{f"val_{k}": round(v, 5) for k, v in metrics.items()},
                   **{f"train_{k}": round(v, 5) for k, v in running.items()},
                   **_rf_errors(ema if ema is not None else model, data, config.image_size)}
            history.append(rec)
            value = metrics[config.val_metric]
            improved = value > best if higher_better else value < best
            msg = (f"step {step}/{total} epoch {step / steps_per_epoch:.2f}: val L1 {metrics['l1']:.4f}, "
                   f"val pixel corr {metrics['pixel_corr']:.4f}" + (" (best)" if improved else ""))
            bar.write(msg)
            log.info(msg)
            if improved:
                best = value
            state = dict(model=ema if ema is not None else model, model_raw=model if ema is not None else None,
                         step=step, epoch=epoch, disc=disc, opt_g=opt_g, opt_d=opt_d, rf_head=rf_head,
                         best_metric=best, history=history, **common)
            save_checkpoint(last_path, **state)
            if improved:
                save_checkpoint(best_path, **state)
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
    bar.close()
    digest = dist.check_in_sync(model, step)
    if dist.enabled:
        log.info("DDP: the %d ranks hold identical parameters (sha256 %s)", dist.world_size, digest[:16])
    if not main:
        return TrainResult(out, best_path, last_path, step, best, history, losses.note, None, digest)
    if not best_path.exists():  # e.g. resumed at the end
        save_checkpoint(best_path, model=ema if ema is not None else model,
                        model_raw=model if ema is not None else None, step=step, epoch=step // steps_per_epoch, disc=disc, opt_g=opt_g,
                        opt_d=opt_d, best_metric=best, history=history, rf_head=rf_head, **common)
    rf_rec = _rf_recovery(init_centres, ema if ema is not None else model, data, config.image_size, out)
    return TrainResult(out, best_path, last_path, step, best, history, losses.note, rf_rec, digest)


def _rf_errors(model: HomeomorphicDecoder, data: Any, width: int) -> dict[str, float]:
    """rf_err_<area>: median centre error (% of width) vs the true RFs, for the history; {} without them."""
    if getattr(data, "rf_true", None) is None:
        return {}
    rec = rf_recovery(model.rf_centres().cpu().numpy(), data.rf_true, data.layout.electrode_areas(), width)
    return {f"rf_err_{area}": round(r["median_pct_width"], 3) for area, r in rec.items()}


def _rf_recovery(init: np.ndarray, model: HomeomorphicDecoder, data: Any, width: int,
                 out: Path) -> dict[str, Any] | None:
    """The RF report of this run (training/rf_report.py), logged and written to out/rf_recovery.json."""
    if getattr(data, "rf_true", None) is None:
        return None
    other, other_seed = None, None
    try:
        other, other_seed = other_monkey_centres(data.layout, data.rf_true)
    except (ValueError, ConfigError) as e:
        log.warning("RF report without the other-monkey control: %s", e)
    report = rf_report(init, model.rf_centres().cpu().numpy(), data.rf_true, data.layout.electrode_areas(),
                       width, other, other_seed)
    (out / "rf_recovery.json").write_text(json.dumps(report, indent=2))
    log.info("%s", format_rf_report(report))
    return report


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def train_from_source(source: str | Path, config: TrainConfig, out_dir: str | Path, *,
                      resume: str | Path | None = None, cache_dir: str | Path | None = None,
                      things_dir: str | Path | None = None, monkey: str = "N",
                      progress: bool = True, nwb: dict[str, str | None] | None = None,
                      dist: DistContext = SINGLE) -> TrainResult:
    """Load a session .h5 / NWB file / TVSD folder with the config's windows, size and split, then train.

    TVSD only: things_dir is the local THINGS image folder, monkey 'N' or 'F'.
    NWB only: nwb = {"series", "intervals", "images"} names (see rtdecode.sessions.nwb).
    Under DDP every process loads the data; rank 0 first, so that it alone builds the map cache.
    """
    from .data import load_decoding_data

    if not dist.is_main:
        dist.barrier()
    data = load_decoding_data(source, windows=config.windows, image_size=config.image_size, split=config.split,
                              seed=config.data_seed, cache_dir=cache_dir, things_dir=things_dir, monkey=monkey,
                              progress=progress and dist.is_main, nwb=nwb)
    if dist.is_main:
        dist.barrier()
    return train(data, config, out_dir, resume=resume, progress=progress,
                 data_info={"source": str(source)}, dist=dist)


def resume_config(checkpoint: str | Path, **overrides: Any) -> TrainConfig:
    """The config stored in a checkpoint, with run-length/device options overridden (None = keep)."""
    ckpt = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(json.loads(ckpt["config"]), source=f"{checkpoint} config")
    return cfg.updated(**overrides)
