"""Ridge-regression baseline: normalised maps -> pixels, closed form, alpha chosen on validation.

Features are the decoder input x [N, M, E] flattened; entries outside each map's electrode group
are always 0 and are dropped before fitting (they carry no information), so the problem has
sum(mask) features. With more features than samples the dual (kernel) form is solved instead of
the primal one; both use one eigendecomposition for every alpha on the grid. Inputs and targets
are centred (the intercept is not penalised).

`RidgeDecoder.to_onnx(contract)` exports the fit through rtdecode.onnx_io.build_linear_decoder,
so the baseline is a servable rtdecode model (frame = clip(W x + b, 0, 1)). Its weight matrix is
[M*E, 3*H*W] float32, e.g. 15*960 x 3*64*64 = 708 MB for TVSD monkey N at 64x64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtdecode.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class RidgeDecoder:
    """A fitted linear map from maps [M, E] (mask entries only) to images [3, H, W]."""

    mask: np.ndarray  # bool [M, E]
    image_shape: tuple[int, int, int]  # (3, H, W)
    weight: np.ndarray  # float32 [F, P] on the mask's features
    bias: np.ndarray  # float32 [P]
    alpha: float
    scores: dict[float, float] = field(default_factory=dict)  # alpha -> validation MSE

    @classmethod
    def fit(cls, train_x: np.ndarray, train_y: np.ndarray, mask: np.ndarray, *,
            val_x: np.ndarray | None = None, val_y: np.ndarray | None = None,
            alphas: np.ndarray | list[float] | None = None) -> RidgeDecoder:
        """Fit on the training split; pick alpha by validation MSE (clipped to [0, 1]) when given."""
        mask = np.asarray(mask, dtype=bool)
        x = _features(train_x, mask, "train_x")
        y = _targets(train_y, x.shape[0], "train_y")
        image_shape = tuple(int(s) for s in np.shape(train_y)[1:])
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
        n, f = xc.shape
        dual = f > n
        if dual:  # W = Xc^T U diag(1/(s+a)) U^T Yc
            s, u = np.linalg.eigh(xc @ xc.T)
            proj = u.T @ yc  # [n, P]
        else:  # W = V diag(1/(s+a)) V^T Xc^T Yc
            s, u = np.linalg.eigh(xc.T @ xc)
            proj = u.T @ (xc.T @ yc)  # [f, P]
        s = np.clip(s, 0.0, None)
        scale = float(s.mean()) if s.mean() > 0 else 1.0
        grid = np.asarray(alphas if alphas is not None else scale * np.logspace(-4, 2, 13), dtype=np.float64)
        if grid.size == 0 or np.any(grid <= 0):
            raise ConfigError(f"ridge alphas must be positive, got {grid.tolist()}")

        def weight_for(a: float) -> np.ndarray:
            coef = proj / (s + a)[:, None]
            return (xc.T @ (u @ coef)) if dual else (u @ coef)

        scores: dict[float, float] = {}
        have_val = val_x is not None and val_y is not None and len(val_x) > 0
        if have_val and grid.size > 1:
            xv = _features(val_x, mask, "val_x") - x_mean
            yv = _targets(val_y, xv.shape[0], "val_y")
            # prediction = xv @ W + y_mean; precompute xv through the fixed part of W
            left = (xv @ xc.T @ u) if dual else (xv @ u)
            for a in grid:
                pred = np.clip(left @ (proj / (s + a)[:, None]) + y_mean, 0.0, 1.0)
                scores[float(a)] = float(np.mean((pred - yv) ** 2))
            alpha = min(scores, key=scores.__getitem__)
        else:
            alpha = float(grid[len(grid) // 2])
            if grid.size > 1:
                log.warning("ridge: no validation split; alpha %.3g taken from the middle of the grid", alpha)
        w = weight_for(alpha)
        b = y_mean - x_mean @ w
        log.info("ridge: %d samples, %d features (%s form), alpha %.3g", n, f, "dual" if dual else "primal", alpha)
        return cls(mask, image_shape, w.astype(np.float32), b.astype(np.float32), float(alpha), scores)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x [N, M, E] normalised -> images [N, 3, H, W] clipped to [0, 1]."""
        f = _features(x, self.mask, "x")
        y = f @ self.weight.astype(np.float64) + self.bias
        return np.clip(y, 0.0, 1.0).astype(np.float32).reshape(f.shape[0], *self.image_shape)

    def full_weight(self) -> np.ndarray:
        """float32 [M*E, 3*H*W]: zero rows for entries outside the mask (the served input layout)."""
        w = np.zeros((self.mask.size, self.weight.shape[1]), dtype=np.float32)
        w[np.flatnonzero(self.mask.ravel())] = self.weight
        return w

    def to_onnx(self, contract: Any):
        """A servable rtdecode ONNX model (onnx.ModelProto) with the contract's metadata."""
        from rtdecode.onnx_io import build_linear_decoder

        if tuple(contract.input_shape) != self.mask.shape or tuple(contract.frame_shape) != self.image_shape:
            raise ConfigError(f"contract input {contract.input_shape} / frame {contract.frame_shape} do not match "
                              f"the ridge fit ({self.mask.shape} -> {self.image_shape})")
        if not np.array_equal(contract.mask, self.mask):
            raise ConfigError("the contract's map mask differs from the one the ridge decoder was fitted with")
        return build_linear_decoder(contract, self.full_weight(), self.bias)


def _features(x: Any, mask: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1:] != mask.shape:
        raise ConfigError(f"{name} must be maps [N, {mask.shape[0]}, {mask.shape[1]}], got shape {x.shape}")
    return x[:, mask].astype(np.float64)


def _targets(y: Any, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 4 or y.shape[0] != n:
        raise ConfigError(f"{name} must be images [{n}, 3, H, W], got shape {y.shape}")
    return y.reshape(n, -1).astype(np.float64)
