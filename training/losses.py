"""Losses of the homeomorphic decoder: w_adv * BCE adversarial + w_vgg * VGG19 feature L1 + w_l1 * L1.

A weight of 0 switches its term off. The VGG term needs the user's VGG19 weights file; without
one it is off (one log line says so) and the other terms train the model. The image pool keeps
up to 50 past (maps, fake image) pairs so the discriminator sees a history of the generator.
"""

from __future__ import annotations

import logging
import random

import torch
from torch import nn

from .vgg import TAP_WEIGHTS, VGGFeatures, load_vgg

log = logging.getLogger(__name__)


class ImagePool:
    """pix2pix's history buffer: returns a batch half from the pool, half fresh (per item, p=0.5)."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = int(size)
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.rand = random.Random(seed)

    def query(self, maps: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return maps, fake
        out_m, out_f = [], []
        for m, f in zip(maps.detach(), fake.detach(), strict=True):
            if len(self.items) < self.size:
                self.items.append((m.clone(), f.clone()))
                out_m.append(m)
                out_f.append(f)
            elif self.rand.random() < 0.5:
                j = self.rand.randrange(self.size)
                old = self.items[j]
                self.items[j] = (m.clone(), f.clone())
                out_m.append(old[0])
                out_f.append(old[1])
            else:
                out_m.append(m)
                out_f.append(f)
        return torch.stack(out_m), torch.stack(out_f)


class VGGLoss(nn.Module):
    """Weighted L1 between VGG19 features of the reconstruction and the original (5 depths)."""

    def __init__(self, features: VGGFeatures):
        super().__init__()
        self.features = features

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.features(real)
        out = self.features(fake)
        return sum(w * nn.functional.l1_loss(a, b) for w, a, b in zip(TAP_WEIGHTS, out, ref, strict=True))


class DecoderLoss(nn.Module):
    """Generator and discriminator objectives from the configured weights."""

    def __init__(self, w_adv: float = 0.01, w_vgg: float = 1.0, w_l1: float = 0.5, w_mse: float = 0.0,
                 vgg_weights: str | None = None):
        super().__init__()
        self.w_adv, self.w_l1, self.w_mse = float(w_adv), float(w_l1), float(w_mse)
        self.w_vgg = float(w_vgg)
        self.vgg: VGGLoss | None = None
        self.note = ""
        if self.w_vgg > 0:
            if vgg_weights:
                self.vgg = VGGLoss(load_vgg(vgg_weights))
            else:
                self.note = ("VGG19 feature loss is off: no --vgg-weights file given (nothing is downloaded); "
                             f"training with adversarial {self.w_adv} + L1 {self.w_l1}"
                             + (f" + MSE {self.w_mse}" if self.w_mse else ""))
                log.warning(self.note)
                self.w_vgg = 0.0
        self.bce = nn.BCEWithLogitsLoss()

    @property
    def uses_discriminator(self) -> bool:
        return self.w_adv > 0

    def generator(self, fake: torch.Tensor, real: torch.Tensor,
                  d_fake: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts (floats, for logging)."""
        parts: dict[str, torch.Tensor] = {}
        if self.w_l1 > 0:
            parts["l1"] = nn.functional.l1_loss(fake, real)
        if self.w_mse > 0:
            parts["mse"] = nn.functional.mse_loss(fake, real)
        if self.vgg is not None:
            parts["vgg"] = self.vgg(fake, real)
        if self.w_adv > 0 and d_fake is not None:
            parts["adv"] = self.bce(d_fake, torch.ones_like(d_fake))
        weights = {"l1": self.w_l1, "mse": self.w_mse, "vgg": self.w_vgg, "adv": self.w_adv}
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def discriminator(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.bce(d_real, torch.ones_like(d_real)) + self.bce(d_fake, torch.zeros_like(d_fake)))
