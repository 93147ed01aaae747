"""The model contract: what an rtdecode ONNX decoder carries so that serving needs no other file.

Input  `mua`   float32 [batch, M, E]: window-averaged maps (see windows.py), already normalised
               with the statistics stored here (normalisation happens outside the graph, in
               `windows.Normaliser`, the same code training uses).
Output `frame` float32 [batch, 3, H, W] in [0, 1], channel order RGB.

Metadata (ONNX metadata_props), every value a string, JSON where structured:
  rtdecode.format_version   "1"
  rtdecode.kind             "homeomorphic-decoder"
  rtdecode.model_id         short id (name + hash) shown in frame headers
  rtdecode.layout           ElectrodeLayout.to_json()
  rtdecode.windows          WindowPlan.to_json() (maps, sampling rate)
  rtdecode.normalisation    {"shape": [M, E], "mean": b64 float32 LE, "std": b64 float32 LE}
  rtdecode.image            {"height": H, "width": W, "channels": 3, "channel_order": "RGB", "range": [0, 1]}
  rtdecode.training_config  the full training config (JSON)
Optional:
  rtdecode.input_fit        input-fit statistics (rtdecode.fit: per-area low-rank model of the
                            training windows and the held-out score range; its own "version"),
                            written at export (--fit-data) or by `rtdecode fit-stats`; models
                            without it serve without the input-fit monitor
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, LayoutError, ModelError
from .fit import INPUT_FIT_KEY, FitStats, read_fit_stats
from .layout import ElectrodeLayout
from .windows import Normaliser, WindowAssembler, WindowPlan, map_mask

FORMAT_VERSION = 1
KIND = "homeomorphic-decoder"
PREFIX = "rtdecode."
INPUT_NAME = "mua"
OUTPUT_NAME = "frame"
REQUIRED_KEYS = ("format_version", "kind", "model_id", "layout", "windows", "normalisation", "image",
                 "training_config")


@dataclass(eq=False)
class DecoderContract:
    """Everything serving needs to feed a decoder and interpret its output."""

    layout: ElectrodeLayout
    plan: WindowPlan
    norm_mean: np.ndarray  # float32 [M, E]
    norm_std: np.ndarray  # float32 [M, E]
    image_height: int
    image_width: int
    model_id: str
    training_config: dict[str, Any] = field(default_factory=dict)
    channel_order: str = "RGB"
    fit_stats: FitStats | None = None  # input-fit statistics (rtdecode.fit), None for older models

    def __post_init__(self) -> None:
        shape = (self.plan.n_maps, self.layout.n_electrodes)
        self.mask = map_mask(self.plan, self.layout)
        self.norm_mean = np.asarray(self.norm_mean, dtype=np.float32)
        self.norm_std = np.asarray(self.norm_std, dtype=np.float32)
        if self.norm_mean.shape != shape or self.norm_std.shape != shape:
            raise ModelError(f"normalisation statistics have shape {self.norm_mean.shape}, "
                             f"expected [maps, electrodes] = {list(shape)}")
        if self.image_height <= 0 or self.image_width <= 0:
            raise ModelError(f"image size must be positive, got {self.image_height}x{self.image_width}")

    @property
    def input_shape(self) -> tuple[int, int]:
        """(M, E) of one decoder input."""
        return self.plan.n_maps, self.layout.n_electrodes

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return 3, self.image_height, self.image_width

    def assembler(self) -> WindowAssembler:
        return WindowAssembler(self.plan, self.layout)

    def normaliser(self) -> Normaliser:
        return Normaliser(self.norm_mean, self.norm_std, self.mask)

    def describe(self) -> dict[str, Any]:
        """What `rtdecode inspect M.onnx` prints: model id, layout, windows, input/output, training config."""
        lay, plan = self.layout, self.plan
        return {
            "model_id": self.model_id,
            "layout": {"name": lay.name, "channels": lay.n_channels, "electrodes": lay.n_electrodes,
                       "areas": list(lay.areas_present()), "broken_arrays": list(lay.broken_arrays)},
            "windows": {"preset": plan.preset, "maps": [m.name for m in plan.maps],
                        "span_samples": plan.span, "sampling_rate_hz": plan.sampling_rate_hz},
            "input": {"name": "mua", "shape": ["batch", *self.input_shape]},
            "output": {"name": "frame", "shape": ["batch", *self.frame_shape]},
            "training_config": self.training_config,
            "input_fit": None if self.fit_stats is None else self.fit_stats.summary(),
        }

    # ---- metadata ------------------------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        m, e = self.input_shape
        return {
            PREFIX + "format_version": str(FORMAT_VERSION),
            PREFIX + "kind": KIND,
            PREFIX + "model_id": self.model_id,
            PREFIX + "layout": self.layout.to_json(),
            PREFIX + "windows": self.plan.to_json(),
            PREFIX + "normalisation": json.dumps({"shape": [m, e], "mean": _b64(self.norm_mean),
                                                  "std": _b64(self.norm_std)}),
            PREFIX + "image": json.dumps({"height": self.image_height, "width": self.image_width,
                                          "channels": 3, "channel_order": self.channel_order,
                                          "range": [0, 1]}),
            PREFIX + "training_config": json.dumps(self.training_config, default=str),
            **({} if self.fit_stats is None else {INPUT_FIT_KEY: self.fit_stats.to_json()}),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], *, source: str = "model") -> DecoderContract:
        """Parse and validate; the error says which keys are missing or malformed."""
        missing = [k for k in REQUIRED_KEYS if PREFIX + k not in meta]
        if len(missing) == len(REQUIRED_KEYS):
            raise ModelError("is not an rtdecode decoder: it has no rtdecode.* metadata "
                             "(export models with `rtdecode export`)", path=source)
        if missing:
            raise ModelError("is not a complete rtdecode decoder: missing metadata "
                             + ", ".join(PREFIX + k for k in missing), path=source)
        if meta[PREFIX + "kind"] != KIND:
            raise ModelError(f"rtdecode.kind is {meta[PREFIX + 'kind']!r}, expected {KIND!r}", path=source)
        try:
            version = int(meta[PREFIX + "format_version"])
        except ValueError as e:
            raise ModelError(f"rtdecode.format_version {meta[PREFIX + 'format_version']!r} is not an integer",
                             path=source) from e
        if version > FORMAT_VERSION:
            raise ModelError(f"format version {version} is newer than this rtdecode understands "
                             f"({FORMAT_VERSION}); upgrade rtdecode", path=source)
        try:
            layout = ElectrodeLayout.from_json(meta[PREFIX + "layout"], source=f"{source} rtdecode.layout")
            plan = WindowPlan.from_dict(json.loads(meta[PREFIX + "windows"]))
            norm = json.loads(meta[PREFIX + "normalisation"])
            shape = tuple(norm["shape"])
            mean = _unb64(norm["mean"], shape)
            std = _unb64(norm["std"], shape)
            image = json.loads(meta[PREFIX + "image"])
            config = json.loads(meta[PREFIX + "training_config"])
            fit = read_fit_stats(meta, int(np.prod(shape)), source=source)
            return cls(layout, plan, mean, std, int(image["height"]), int(image["width"]),
                       meta[PREFIX + "model_id"], config, str(image.get("channel_order", "RGB")), fit)
        except (LayoutError, ConfigError) as e:
            raise ModelError(f"inconsistent metadata: {e}", path=source) from e
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"malformed rtdecode metadata ({type(e).__name__}: {e})", path=source) from e


def read_contract(path: str | Path) -> DecoderContract:
    """Read and validate the contract of an ONNX decoder (graph structure checked too)."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelError("does not exist", path=str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, google.protobuf errors, ...
        raise ModelError(f"is not an ONNX file ({type(e).__name__}: {e})", path=str(path)) from e
    meta = {p.key: p.value for p in model.metadata_props}
    contract = DecoderContract.from_metadata(meta, source=str(path))
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelError(f"graph must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}; "
                         f"has inputs {list(inputs)} and outputs {list(outputs)}", path=str(path))
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[INPUT_NAME].type.tensor_type.shape.dim]
    want = [None, *contract.input_shape]
    if len(dims) != 3 or any(d is not None and w is not None and d != w for d, w in zip(dims, want, strict=True)):
        raise ModelError(f"input {INPUT_NAME!r} has shape {dims}, metadata says [batch, {contract.input_shape[0]}, "
                         f"{contract.input_shape[1]}]", path=str(path))
    return contract


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(s: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), dtype="<f4")
    if a.size != int(np.prod(shape)):
        raise ValueError(f"array of {a.size} values does not fit shape {list(shape)}")
    return a.reshape(shape).astype(np.float32)
