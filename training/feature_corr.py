"""Feature-space correlation of reconstructions with their originals through a pretrained network.

MonkeySee scores reconstructions by the Pearson r between a pretrained network's features of the
reconstruction and of the original. Here the network is VGG19 at the five depths of the perceptual
loss (relu1_1 .. relu5_1, inputs resized to 224 and ImageNet-normalised; training/vgg.py), with
weights only from the user's own file: nothing is downloaded, and without a file the evaluation
report says so instead of a number. Per image and layer, r is taken over the flattened feature map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rtdecode.errors import ConfigError

VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
ALEXNET_TAPS = (1, 4, 7, 9, 11)  # torchvision alexnet().features index of each conv layer's ReLU


def _row_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r between matching rows of a and b [N, D] (0 where a row is constant), in float64."""
    a, b = a.double(), b.double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(dim=1) / den.clamp_min(1e-30), torch.zeros_like(den))


def feature_correlations(images: dict[str, np.ndarray], originals: np.ndarray,
                         extractor: Callable[[torch.Tensor], Sequence[torch.Tensor]], *,
                         batch: int = 8) -> dict[str, np.ndarray]:
    """name -> float [L, N]: r between extractor features of images[name][i] and originals[i], per layer.

    images: decoder name -> [N, 3, H, W] in [0, 1]; the originals' features are computed once per batch.
    """
    originals = np.asarray(originals, dtype=np.float32)
    n = originals.shape[0]
    for name, imgs in images.items():
        if np.shape(imgs) != originals.shape:
            raise ConfigError(f"{name}: reconstructions {np.shape(imgs)} and originals {originals.shape} "
                              "must have the same shape")
    out: dict[str, list[list[np.ndarray]]] = {name: [] for name in images}
    with torch.no_grad():
        for s in range(0, n, int(batch)):
            ref = [f.flatten(1) for f in extractor(torch.from_numpy(originals[s:s + batch]))]
            for name, imgs in images.items():
                x = torch.from_numpy(np.ascontiguousarray(imgs[s:s + batch], dtype=np.float32))
                feats = [f.flatten(1) for f in extractor(x)]
                out[name].append([_row_corr(f, r).numpy() for f, r in zip(feats, ref, strict=True)])
    return {name: np.stack([np.concatenate([b[k] for b in batches]) for k in range(len(batches[0]))])
            for name, batches in out.items() if batches}


def vgg_feature_correlations(images: dict[str, np.ndarray], originals: np.ndarray, weights: str | Path, *,
                             batch: int = 8) -> dict[str, np.ndarray]:
    """feature_correlations through VGG19 (VGG_LAYERS) loaded from the user's weights file."""
    from .vgg import load_vgg

    return feature_correlations(images, originals, load_vgg(weights), batch=batch)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet convolutional part (same layer indices), up to the conv5 ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())


class AlexNetFeatures(nn.Module):
    """Frozen AlexNet returning the five conv-layer ReLU maps of an image batch in [0, 1]."""

    def __init__(self, state_dict: dict[str, torch.Tensor], *, source: str = "AlexNet weights"):
        from .vgg import IMAGENET_MEAN, IMAGENET_STD

        super().__init__()
        self.features = alexnet_features()
        own = {}
        for name, ref in self.features.state_dict().items():
            key = f"features.{name}" if f"features.{name}" in state_dict else name
            if key not in state_dict:
                raise ConfigError(f"{source}: tensor 'features.{name}' is missing; expected a torchvision alexnet "
                                  "state dict (features.N.weight / features.N.bias)")
            t = state_dict[key]
            if tuple(t.shape) != tuple(ref.shape):
                raise ConfigError(f"{source}: tensor 'features.{name}' has shape {list(t.shape)}, expected "
                                  f"{list(ref.shape)} (is this an AlexNet state dict?)")
            own[name] = t.float()
        self.features.load_state_dict(own)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = nn.functional.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in ALEXNET_TAPS:
                out.append(x)
        return out


def load_alexnet(path: str | Path) -> AlexNetFeatures:
    """AlexNet features from the user's weights file (.pth or .safetensors); a clear ConfigError for a wrong file."""
    from .vgg import read_state_dict

    return AlexNetFeatures(read_state_dict(path), source=str(path))


def alexnet_feature_correlations(images: dict[str, np.ndarray], originals: np.ndarray, weights: str | Path, *,
                                 batch: int = 16) -> dict[str, np.ndarray]:
    """feature_correlations through AlexNet (ALEXNET_LAYERS) loaded from the user's weights file."""
    return feature_correlations(images, originals, load_alexnet(weights), batch=batch)
