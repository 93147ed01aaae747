"""Training checkpoints: everything needed to rebuild the decoder, its contract, and resume.

A checkpoint is a torch.save'd dict holding only tensors, plain Python values and JSON strings,
so it loads with torch.load(weights_only=True) (no pickle of arbitrary objects):
  format, format_version
  model_args (JSON)   HomeomorphicDecoder constructor arguments
  config (JSON)       the full TrainConfig
  model, disc         state dicts (disc None without a discriminator); with EMA, `model` holds the
                      averaged weights (validated, exported) and `model_raw` the trained ones
  rf_head             RF encoding weights (training/rf_learning.py; None when that loss is off)
  opt_g, opt_d        optimiser states (None in exported-only checkpoints)
  step, epoch, best_metric, history (JSON list of validation records)
  norm_mean, norm_std float32 [M, E] normaliser statistics (fit on the training split)
  layout, plan (JSON) ElectrodeLayout / WindowPlan of the decoder input
  data (JSON)         data source, split, seeds, sizes
  sample_inputs       float32 [k, M, E] a few real validation inputs (export parity checks)
  torch_rng           CPU RNG state, for resuming
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rtdecode.errors import ModelError

from .config import TrainConfig
from .model import HomeomorphicDecoder

FORMAT = "rtdecode-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, *, model: HomeomorphicDecoder, config: TrainConfig, step: int, epoch: int,
                    norm_mean: Any, norm_std: Any, layout_json: str, plan_json: str,
                    data_info: dict[str, Any] | None = None, disc: torch.nn.Module | None = None,
                    opt_g: torch.optim.Optimizer | None = None, opt_d: torch.optim.Optimizer | None = None,
                    best_metric: float | None = None, history: list[dict[str, Any]] | None = None,
                    sample_inputs: Any = None, model_raw: torch.nn.Module | None = None,
                    rf_head: torch.nn.Module | None = None) -> Path:
    """Write atomically (temp file then rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_args": json.dumps(model.args),
        "config": json.dumps(config.to_dict()),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_raw": None if model_raw is None else {k: v.detach().cpu() for k, v in model_raw.state_dict().items()},
        "disc": None if disc is None else {k: v.detach().cpu() for k, v in disc.state_dict().items()},
        "rf_head": None if rf_head is None else {k: v.detach().cpu() for k, v in rf_head.state_dict().items()},
        "opt_g": None if opt_g is None else opt_g.state_dict(),
        "opt_d": None if opt_d is None else opt_d.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "history": json.dumps(history or []),
        "norm_mean": torch.as_tensor(norm_mean, dtype=torch.float32).clone(),
        "norm_std": torch.as_tensor(norm_std, dtype=torch.float32).clone(),
        "layout": layout_json,
        "plan": plan_json,
        "data": json.dumps(data_info or {}),
        "sample_inputs": None if sample_inputs is None else torch.as_tensor(sample_inputs, dtype=torch.float32),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, str(tmp))
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only=True), validated; JSON fields stay strings."""
    path = Path(path)
    if not path.exists():
        raise ModelError("checkpoint does not exist", path=str(path))
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"is not a loadable rtdecode checkpoint ({type(e).__name__}: {e})", path=str(path)) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"is not an rtdecode checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r}, "
                         f"expected {FORMAT!r})", path=str(path))
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"checkpoint format {ckpt['format_version']} is newer than this code ({FORMAT_VERSION})",
                         path=str(path))
    missing = [k for k in ("model_args", "config", "model", "norm_mean", "norm_std", "layout", "plan") if k not in ckpt]
    if missing:
        raise ModelError(f"checkpoint lacks {missing}", path=str(path))
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> HomeomorphicDecoder:
    """Rebuild the decoder from a checkpoint dict (eval mode, CPU)."""
    args = json.loads(ckpt["model_args"])
    model = HomeomorphicDecoder.from_args(args)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model


def load_decoder(path: str | Path, device: str = "cpu") -> tuple[HomeomorphicDecoder, TrainConfig]:
    """(decoder in eval mode, its TrainConfig) from a checkpoint file; the checkpoint alone suffices."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt).to(device)
    config = TrainConfig.from_dict(json.loads(ckpt["config"]), source=f"{path} config")
    return model, config


def contract_from_checkpoint(ckpt: dict[str, Any], model_id: str):
    """The rtdecode DecoderContract the exported model carries."""
    from rtdecode.contract import DecoderContract
    from rtdecode.layout import ElectrodeLayout
    from rtdecode.windows import WindowPlan

    layout = ElectrodeLayout.from_json(ckpt["layout"], source="checkpoint layout")
    plan = WindowPlan.from_dict(json.loads(ckpt["plan"]))
    args = json.loads(ckpt["model_args"])
    training = {
        "config": json.loads(ckpt["config"]),
        "model_class": "rtdecode.training.model.HomeomorphicDecoder",
        "model_args": args,
        "step": int(ckpt.get("step", 0)),
        "epoch": int(ckpt.get("epoch", 0)),
        "best_metric": ckpt.get("best_metric"),
        "data": json.loads(ckpt.get("data") or "{}"),
    }
    size = int(args["image_size"])
    return DecoderContract(layout, plan, ckpt["norm_mean"].numpy(), ckpt["norm_std"].numpy(), size, size,
                           model_id, training)
