"""Training configuration: one validated dataclass, presets `paper` and `fast`, JSON round trip.

`paper` follows MonkeySee (96x96, U-Net 64-128-256-512-512, PatchGAN C64-C128-C256-C512,
losses 0.01 adversarial + 1.0 VGG19 + 0.5 L1, Adam 2e-4 / 0.5, batch 8).
`fast` is the CPU-friendly demo model (64x64, a narrow U-Net, a narrow PatchGAN).
Unknown keys are rejected by name; values are checked when the config is built.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rtdecode.errors import ConfigError

WINDOW_PRESETS = ("spatiotemporal", "spatial")
DEVICES = ("cpu", "cuda")
VAL_METRICS = ("pixel_corr", "l1")
RF_INITS = ("mapped", "centre", "grid")  # training/rf_learning.py documents them


@dataclass
class TrainConfig:
    """Everything that defines a training run (with the data source, this reproduces a model)."""

    preset: str = "fast"
    # data
    windows: str = "spatiotemporal"
    image_size: int = 64
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    data_seed: int = 0
    # model
    widths: tuple[int, ...] = (32, 64, 128, 256)
    disc_widths: tuple[int, ...] = (32, 64, 128, 256)
    rf_normalise: bool = True  # divide each painted map by its sum of Gaussians (+ rf_norm_eps)
    rf_norm_eps: float = 0.5
    rf_sigma_init: dict[str, float] = field(default_factory=lambda: {"V1": 0.04, "V4": 0.10, "IT": 0.25})
    learn_rf: bool = True
    # RF learning (training/rf_learning.py): where the RFs start and what moves them
    rf_init: str = "mapped"  # mapped (layout's RFs where known, else grid) | centre | grid (uninformative)
    rf_init_sigma: float = 0.25  # width of every RF at an uninformative start (centre, grid)
    w_rf_encode: float = 0.0  # weight of the RF encoding loss (each RF's Gaussian explains its response); 0 = off
    rf_hold_steps: int = 0  # RF centres/widths stay put for this many steps (the encoding weights fit first)
    rf_decoder_grad: bool = True  # the decoder's loss moves the RFs too (False: only the encoding loss does)
    dropout: float = 0.0  # decoder dropout (pix2pix uses 0.5 in the innermost up-blocks)
    input_noise: float = 0.0  # training augmentation: Gaussian noise (sd, z-units) added to the input maps
    # losses (a weight of 0 disables the term; w_adv = 0 means no discriminator at all)
    w_adv: float = 0.01
    w_vgg: float = 1.0
    w_l1: float = 0.5
    w_mse: float = 0.0  # optional extra pixel term (not in the paper)
    vgg_weights: str | None = None
    pool_size: int = 50
    # optimisation
    batch_size: int = 8
    epochs: int = 30
    max_steps: int = 0  # > 0: stop after this many optimiser steps (overrides epochs)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    rf_lr_scale: float = 1.0  # learning-rate multiplier for the RF centres and widths (and the RF encoding weights)
    ema: float = 0.0  # > 0: validate, checkpoint and export an exponential moving average of the weights
    lr_decay_from: float = 0.5  # linear decay to 0 starts at this fraction of all steps (1.0 = constant)
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 0  # 0: min(2, available cores)
    val_every: int = 0  # validate every N steps; 0: once per epoch
    val_metric: str = "pixel_corr"
    log_every: int = 50

    def __post_init__(self) -> None:
        self.split = tuple(float(s) for s in self.split)  # type: ignore[assignment]
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        self.disc_widths = tuple(int(w) for w in self.disc_widths)  # type: ignore[assignment]
        self.rf_sigma_init = {str(k): float(v) for k, v in dict(self.rf_sigma_init).items()}
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, key: str, expected: str) -> None:
            if not cond:
                raise ConfigError(f"training config: {key}={getattr(self, key)!r} is invalid; expected {expected}")

        need(self.windows in WINDOW_PRESETS, "windows", f"one of {WINDOW_PRESETS}")
        need(self.device in DEVICES, "device", f"one of {DEVICES}")
        need(self.val_metric in VAL_METRICS, "val_metric", f"one of {VAL_METRICS}")
        need(isinstance(self.image_size, int) and self.image_size >= 16, "image_size", "an integer >= 16")
        need(len(self.split) == 3 and all(s >= 0 for s in self.split) and self.split[0] > 0
             and abs(sum(self.split) - 1.0) < 1e-6, "split", "three fractions >= 0 summing to 1 (train > 0)")
        need(len(self.widths) >= 2 and all(w > 0 for w in self.widths), "widths", "at least 2 positive widths")
        need(self.image_size % (2 ** len(self.widths)) == 0, "image_size",
             f"a multiple of 2**len(widths) = {2 ** len(self.widths)} (each U-Net level halves the size)")
        need(len(self.disc_widths) >= 2 and all(w > 0 for w in self.disc_widths), "disc_widths",
             "at least 2 positive widths")
        need(self.rf_norm_eps > 0, "rf_norm_eps", "> 0")
        need(all(v > 0 for v in self.rf_sigma_init.values()), "rf_sigma_init", "positive widths per area")
        need(self.rf_init in RF_INITS, "rf_init", f"one of {RF_INITS}")
        need(0.0 < self.rf_init_sigma <= 1.0, "rf_init_sigma", "a width in (0, 1] (fraction of the image width)")
        need(self.w_rf_encode >= 0, "w_rf_encode", ">= 0 (0 = no RF encoding loss)")
        need(self.rf_hold_steps >= 0, "rf_hold_steps", ">= 0")
        need(0.0 <= self.dropout < 1.0, "dropout", "0 <= dropout < 1")
        need(self.input_noise >= 0, "input_noise", ">= 0")
        for key in ("w_adv", "w_vgg", "w_l1", "w_mse"):
            need(getattr(self, key) >= 0, key, ">= 0")
        need(self.w_adv + self.w_vgg + self.w_l1 + self.w_mse > 0, "w_l1", "some loss weight > 0")
        need(self.pool_size >= 0, "pool_size", ">= 0")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.epochs >= 1, "epochs", ">= 1")
        need(self.max_steps >= 0, "max_steps", ">= 0 (0 = no step limit)")
        need(self.lr > 0, "lr", "> 0")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas in [0, 1)")
        need(self.rf_lr_scale >= 0, "rf_lr_scale", ">= 0")
        need(0.0 <= self.ema < 1.0, "ema", "a decay in [0, 1) (0 = off)")
        need(0.0 <= self.lr_decay_from <= 1.0, "lr_decay_from", "a fraction in [0, 1]")
        need(self.num_threads >= 0, "num_threads", ">= 0")
        need(self.val_every >= 0, "val_every", ">= 0")
        need(self.log_every >= 1, "log_every", ">= 1")

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        d["widths"] = list(self.widths)
        d["disc_widths"] = list(self.disc_widths)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "training config") -> TrainConfig:
        """Build from a dict; a `preset` key picks the base values that the other keys override."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        base = preset(d.get("preset", "fast"))
        try:
            return replace(base, **{k: v for k, v in d.items()})
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_json(cls, text: str, *, source: str = "training config") -> TrainConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON ({e})") from e
        return cls.from_dict(d, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return cls.from_json(path.read_text(), source=str(path))

    def updated(self, **overrides: Any) -> TrainConfig:
        """A copy with the given keys changed (None values are ignored: CLI options not given)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"training config: unknown key(s) {unknown}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def preset(name: str) -> TrainConfig:
    """The `paper` or `fast` preset."""
    if name == "fast":
        return TrainConfig(preset="fast")
    if name == "paper":
        return TrainConfig(
            preset="paper", image_size=96, widths=(64, 128, 256, 512, 512),
            disc_widths=(64, 128, 256, 512), dropout=0.0, w_adv=0.01, w_vgg=1.0, w_l1=0.5,
            batch_size=8, epochs=100, rf_norm_eps=0.5,
        )
    raise ConfigError(f"training preset {name!r} is unknown; expected 'fast' or 'paper'")


PRESETS = ("fast", "paper")


def load_config(path: str | Path | None = None, preset_name: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset (given, else the file's 'preset', else fast) <- keys of the JSON file <- overrides (None = keep)."""
    d: dict[str, Any] = {}
    source = "training config"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        source = str(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(d).__name__}")
    if preset_name is not None:
        d = {**d, "preset": preset_name}
    return TrainConfig.from_dict(d, source=source).updated(**overrides)
