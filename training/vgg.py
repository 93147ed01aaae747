"""VGG19 feature extractor for the perceptual loss, with weights only from the user's own file.

The architecture is written here (no torchvision needed); parameter names follow torchvision's
`vgg19().state_dict()` ("features.0.weight", ...), so a torchvision ImageNet checkpoint
(vgg19-dcbb9e9d.pth) or the same tensors in .safetensors load as they are. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rtdecode.errors import ConfigError

# torchvision's vgg19 "E" configuration
CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# feature depths used by the loss: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (index after the ReLU)
TAPS = (2, 7, 12, 21, 30)
TAP_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # as in pix2pixHD's VGGLoss
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """The convolutional part of VGG19 (torchvision layer indices), up to relu5_1."""
    layers: list[nn.Module] = []
    cin = 3
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers[: TAPS[-1]])


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """'features.N.weight'/'features.N.bias' -> shape, for the layers the loss uses."""
    return {f"features.{k}": tuple(v.shape) for k, v in vgg19_features().state_dict().items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .pth (torch.load weights_only=True) or .safetensors file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"VGG19 weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ConfigError(f"{path}: reading .safetensors needs the 'safetensors' package; "
                              "pip install safetensors, or give a torchvision .pth") from e
        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, not a torch file, ...
        raise ConfigError(f"{path}: not a torch state dict loadable with weights_only=True "
                          f"({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return sd


class VGGFeatures(nn.Module):
    """Frozen VGG19 returning the 5 tapped feature maps of an image batch in [0, 1]."""

    def __init__(self, state_dict: dict[str, torch.Tensor], *, source: str = "VGG19 weights"):
        super().__init__()
        self.features = vgg19_features()
        want = expected_shapes()
        own = {}
        for name, shape in want.items():
            key = name if name in state_dict else name.removeprefix("features.")
            if key not in state_dict:
                raise ConfigError(f"{source}: tensor {name!r} is missing; expected a torchvision vgg19 "
                                  "state dict (features.N.weight / features.N.bias)")
            t = state_dict[key]
            if tuple(t.shape) != shape:
                raise ConfigError(f"{source}: tensor {name!r} has shape {list(t.shape)}, expected {list(shape)} "
                                  "(is this a VGG19 state dict?)")
            own[name.removeprefix("features.")] = t.float()
        self.features.load_state_dict(own)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:  # always eval: a fixed feature extractor
        return super().train(False)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = nn.functional.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i + 1 in TAPS:
                out.append(x)
        return out


def load_vgg(path: str | Path) -> VGGFeatures:
    """VGG19 features from the user's weights file; a clear ConfigError for a wrong file."""
    return VGGFeatures(read_state_dict(path), source=str(path))
