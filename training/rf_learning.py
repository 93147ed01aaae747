"""Learning the RF layer: where the RFs start (`rf_init`) and the RF encoding loss that moves them.

Starts (`TrainConfig.rf_init`):
  mapped  the layout's RF centres where known (a lab's RF mapping), else the jittered grid; widths
          from the layout, else `rf_sigma_init` per area (what rtdecode always did)
  centre  every electrode at the image centre (0.5, 0.5), width `rf_init_sigma`: knows nothing
  grid    every electrode on the jittered grid over the image (`spread_centres`), width
          `rf_init_sigma`: knows nothing either (the grid ignores areas and arrays)

Why an extra loss: the decoder's own loss hardly tells an RF where to go. A z-scored response is
signed (OFF cells, colour-opponent cells answer with the opposite sign), all electrodes of an area
are painted into the same maps, and a U-Net can use misplaced RFs as well as placed ones; so from
the mapped RFs the decoder's gradient moves centres *away* from the truth, and from an
uninformative start it does not bring them near it.

The RF encoding loss (`w_rf_encode`) asks the RF layer's own Gaussians to explain every
electrode's response: response[m, e] ~ a[m, e] . features pooled over the image by electrode e's
Gaussian + b[m, e], with a per-(map, electrode) weight vector `a` (its sign absorbs ON/OFF and
colour preference) over a few generic image features (luminance, red-green, blue-yellow, local
contrast). Its gradient moves each centre towards where the electrode's response is explained by
the image and each width towards the size of that region, independently per electrode - RF
mapping, done by gradient descent inside `rtdecode train`. The weights `a`, `b` are training-only
(not exported); the RF layer stays the decoder's, painted maps and export are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import RF_INITS
from .model import sigma_init_for, spread_centres

FEATURES = ("luminance", "red-green", "blue-yellow", "contrast")


def initial_rfs(kind: str, n_electrodes: int, areas: np.ndarray, *, known_centres: np.ndarray | None = None,
                known_sigmas: np.ndarray | None = None, sigma_per_area: dict[str, float] | None = None,
                broad_sigma: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(centres [E, 2], widths [E]) image-normalised, as documented in the module docstring."""
    if kind not in RF_INITS:
        raise ValueError(f"rf_init {kind!r} is unknown; expected one of {RF_INITS}")
    e = int(n_electrodes)
    if kind == "centre":
        return np.full((e, 2), 0.5), np.full(e, float(broad_sigma))
    grid = spread_centres(e).numpy().astype(np.float64)
    if kind == "grid":
        return grid, np.full(e, float(broad_sigma))
    centres = grid
    if known_centres is not None:
        known = np.asarray(known_centres, dtype=np.float64)
        ok = np.isfinite(known).all(axis=1)
        centres = np.where(ok[:, None], known, grid)
    sigmas = sigma_init_for(np.asarray(areas), sigma_per_area or {}).astype(np.float64)
    if known_sigmas is not None:
        ks = np.asarray(known_sigmas, dtype=np.float64)
        sigmas = np.where(np.isfinite(ks) & (ks > 0), ks, sigmas)
    return np.clip(centres, 0.0, 1.0), sigmas


def image_features(y: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> [B, 4, H, W]: luminance - 0.5, R-G, B-(R+G)/2, gradient magnitude."""
    r, g, b = y[:, 0], y[:, 1], y[:, 2]
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    dx = torch.zeros_like(lum)
    dy = torch.zeros_like(lum)
    dx[:, :, 1:-1] = 0.5 * (lum[:, :, 2:] - lum[:, :, :-2])
    dy[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
    contrast = torch.sqrt(dx * dx + dy * dy + 1e-8) * (lum.shape[-1] / 64.0)  # per 1/64 of the width
    return torch.stack([lum - 0.5, r - g, b - 0.5 * (r + g), contrast], dim=1)


class RFEncodingHead(nn.Module):
    """Per-(map, electrode) linear read-in of RF-pooled image features; `loss` is the RF encoding loss."""

    def __init__(self, mask: np.ndarray | torch.Tensor):
        super().__init__()
        mask_t = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        m, e = mask_t.shape
        self.register_buffer("mask", mask_t)
        self.weight = nn.Parameter(torch.zeros(m, e, len(FEATURES)))
        self.bias = nn.Parameter(torch.zeros(m, e))

    @staticmethod
    def pooled(rf: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """[B, K, H, W] -> [B, K, E]: each feature averaged under each electrode's (unit-sum) Gaussian."""
        gx, gy = rf.bases()
        gx = gx / gx.sum(dim=1, keepdim=True).clamp_min(1e-12)
        gy = gy / gy.sum(dim=1, keepdim=True).clamp_min(1e-12)
        t = torch.einsum("eh,bkhw->bkew", gy, features)
        return (t * gx).sum(dim=-1)

    def predict(self, rf: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """Predicted responses [B, M, E] of images y [B, 3, H, W] (zero outside each map's electrodes)."""
        pooled = self.pooled(rf, image_features(y))
        return (torch.einsum("mek,bke->bme", self.weight, pooled) + self.bias) * self.mask

    def loss(self, rf: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the predicted vs the actual (normalised) responses x [B, M, E]."""
        err = (self.predict(rf, y) - x * self.mask) ** 2
        return err.sum() / (self.mask.sum().clamp_min(1.0) * x.shape[0])

