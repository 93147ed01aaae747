"""Evaluate a decoder as it is served (ONNX Runtime CPU) and/or as trained (checkpoint) against ridge.

`evaluate(data, model=..., checkpoint=...)` reconstructs one split, scores every decoder with
training.metrics (pixel correlation, SSIM, 2-/5-way identification), fits the ridge baseline on
the same data, and measures RF recovery on the virtual macaque (learned vs ground-truth centres).
`write_report` saves report.json and grid.png (originals beside each decoder's reconstructions).

The ONNX path needs no torch. Inputs are normalised with the model's own statistics (from its
contract), exactly as serving does; the data's split-fitted statistics are undone first.
Learned RF centres come from the checkpoint (`rf_centres()`), else from the ONNX metadata key
`training.rf_centres` written by training/export.py, else from an initializer named like
`rf.centres`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.errors import ModelError
from rtdecode.metrics import rf_recovery, summarise

from .data import DecodingData
from .ridge import RidgeDecoder

log = logging.getLogger(__name__)
RF_META_KEY = "training.rf_centres"
INTERNAL_KEYS = ("reconstructions", "ridge_decoder")  # in-memory only, not written to report.json


def data_options_from_contract(contract: Any) -> dict[str, Any]:
    """load_decoding_data keyword arguments that reproduce the model's training split and input."""
    cfg = contract.training_config or {}
    inner = cfg["config"] if isinstance(cfg.get("config"), dict) else cfg
    opts: dict[str, Any] = {"windows": contract.plan, "image_size": int(contract.image_height),
                            "layout": contract.layout}
    if "split" in inner:
        opts["split"] = tuple(float(v) for v in inner["split"])
    for key in ("data_seed", "seed"):
        if key in inner:
            opts["seed"] = int(inner[key])
            break
    return opts


def renormalise(x: np.ndarray, data: DecodingData, contract: Any) -> np.ndarray:
    """Maps normalised with the data's statistics -> normalised with the model's (contract's)."""
    if tuple(contract.input_shape) != data.mask.shape:
        raise ModelError(f"model input is [maps, electrodes] = {list(contract.input_shape)} but the data gives "
                         f"{list(data.mask.shape)}; evaluate with the windows and layout the model was trained on")
    if not np.array_equal(contract.mask, data.mask):
        raise ModelError("the model's map/electrode mask differs from the data's (another layout or window plan)")
    raw = x * data.normaliser.std + data.normaliser.mean * data.mask
    raw[:, ~data.mask] = 0.0
    return contract.normaliser()(raw.astype(np.float32))


class OnnxDecoder:
    """An rtdecode .onnx run with ONNX Runtime on the CPU: [N, M, E] -> [N, 3, H, W]."""

    def __init__(self, path: str | Path, threads: int = 2):
        import onnxruntime as ort

        from rtdecode.contract import INPUT_NAME, OUTPUT_NAME, read_contract

        self.path = Path(path)
        self.contract = read_contract(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._in, self._out = INPUT_NAME, OUTPUT_NAME
        dim0 = self.session.get_inputs()[0].shape[0]
        self.batch = 32 if not isinstance(dim0, int) else max(1, int(dim0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, x.shape[0], self.batch):
            chunk = np.ascontiguousarray(x[s:s + self.batch], dtype=np.float32)
            out.append(self.session.run([self._out], {self._in: chunk})[0])
        return np.concatenate(out).astype(np.float32)

    def rf_centres(self) -> np.ndarray | None:
        """Learned RF centres [E, 2] kept in the file (metadata or initializer), or None."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(self.path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        e = self.contract.layout.n_electrodes
        if RF_META_KEY in meta:
            d = json.loads(meta[RF_META_KEY])
            a = np.frombuffer(base64.b64decode(d["data"]), dtype="<f4").reshape(d["shape"])
            if a.shape == (e, 2):
                return a.astype(np.float64)
        for init in model.graph.initializer:
            if ("centre" in init.name or "center" in init.name) and tuple(init.dims) == (e, 2):
                return numpy_helper.to_array(init).astype(np.float64)
        return None


class CheckpointDecoder:
    """A training checkpoint run with torch (eval mode, CPU): [N, M, E] -> [N, 3, H, W]."""

    def __init__(self, path: str | Path):
        from .checkpoint import contract_from_checkpoint, load_checkpoint, load_decoder

        self.path = Path(path)
        self.module, self.config = load_decoder(self.path)
        ckpt = load_checkpoint(self.path)
        self.contract = contract_from_checkpoint(ckpt, f"checkpoint:{self.path.name}")
        # The RF layer groups electrodes by the mask given at construction; rebuild with the real
        # mask so a decoder restored without it does not paint every map with all electrodes.
        try:
            rebuilt = type(self.module).from_args(json.loads(ckpt["model_args"]), mask=self.contract.mask)
            rebuilt.load_state_dict(ckpt["model"])
            self.module = rebuilt
        except (AttributeError, TypeError, KeyError) as e:
            log.debug("checkpoint decoder kept as loaded (%s)", e)
        self.module.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], 32):
                out.append(self.module(torch.from_numpy(np.ascontiguousarray(x[s:s + 32]))).numpy())
        return np.concatenate(out).astype(np.float32)

    def rf_centres(self) -> np.ndarray | None:
        return self.module.rf_centres().cpu().numpy().astype(np.float64)


def evaluate(data: DecodingData, *, model: str | Path | None = None, checkpoint: str | Path | None = None,
             split: str = "test", ridge: bool = True, seed: int = 0, threads: int = 2) -> dict[str, Any]:
    """Scores for each decoder and ridge on one split; returns the report dict (with 'reconstructions')."""
    if model is None and checkpoint is None and not ridge:
        raise ModelError("nothing to evaluate: give a model (.onnx), a checkpoint, or keep the ridge baseline")
    x, y, ids = data.split(split)
    if x.shape[0] == 0:
        raise ModelError(f"the {split!r} split of {data.source} is empty")
    decoders: dict[str, Any] = {}
    if model is not None:
        decoders["model"] = OnnxDecoder(model, threads=threads)
    if checkpoint is not None:
        decoders["checkpoint"] = CheckpointDecoder(checkpoint)
    report: dict[str, Any] = {
        "source": data.source, "split": split, "n_images": int(x.shape[0]),
        "image_size": list(data.image_size), "windows": data.plan.preset, "maps": int(data.n_maps),
        "electrodes": int(data.n_electrodes), "data": data.info, "decoders": {}, "metrics": {},
        "rf_recovery": {}, "ridge": None,
    }
    recon: dict[str, np.ndarray] = {}
    width = data.image_size[1]
    areas = data.layout.electrode_areas()
    for name, dec in decoders.items():
        c = dec.contract
        if (c.image_height, c.image_width) != tuple(data.image_size):
            raise ModelError(f"{name} decodes {c.image_height}x{c.image_width} images but the data holds "
                             f"{data.image_size[0]}x{data.image_size[1]}; load the data with image_size="
                             f"{c.image_height}")
        t0 = time.perf_counter()
        recon[name] = dec(renormalise(x, data, c))
        elapsed = time.perf_counter() - t0
        report["decoders"][name] = {"path": str(dec.path), "model_id": c.model_id,
                                    "seconds_per_image": elapsed / x.shape[0]}
        report["metrics"][name] = summarise(recon[name], y, seed=seed)
        learned = dec.rf_centres()
        if data.rf_true is not None:  # None: this decoder keeps no learned RF centres
            report["rf_recovery"][name] = (None if learned is None else
                                           rf_recovery(learned, data.rf_true, areas, width))
        log.info("%s on %s: %s", name, split, report["metrics"][name])
    if "model" in recon and "checkpoint" in recon:  # served graph vs trained module on the same inputs
        report["onnx_vs_checkpoint_max_abs_diff"] = float(np.abs(recon["model"] - recon["checkpoint"]).max())
    if ridge:
        t0 = time.perf_counter()
        r = RidgeDecoder.fit(data.train_x, data.train_y, data.mask, val_x=data.val_x, val_y=data.val_y)
        recon["ridge"] = r.predict(x)
        report["ridge"] = {"alpha": r.alpha, "val_mse": {f"{a:.4g}": v for a, v in r.scores.items()},
                           "fit_seconds": time.perf_counter() - t0, "features": int(r.weight.shape[0])}
        report["metrics"]["ridge"] = summarise(recon["ridge"], y, seed=seed)
        report["ridge_decoder"] = r
    if data.rf_true is not None and data.rf_known is not None:
        report["rf_recovery"]["layout_known_rfs"] = rf_recovery(data.rf_known, data.rf_true, areas, width)
    if data.rf_true is None:
        report["rf_recovery"] = None
    report["image_ids"] = [int(k) for k in ids]
    report["reconstructions"] = recon
    return report


def write_report(report: dict[str, Any], data: DecodingData, out_dir: str | Path, *, n_grid: int = 10,
                 split: str | None = None) -> dict[str, Path]:
    """report.json (without the arrays) and grid.png (originals row, then one row per decoder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recon = report.get("reconstructions", {})
    clean = {k: v for k, v in report.items() if k not in INTERNAL_KEYS}
    (out / "report.json").write_text(json.dumps(clean, indent=2, default=_json_default) + "\n")
    _, y, _ = data.split(split or report["split"])
    grid = save_grid(y, recon, out / "grid.png", n=n_grid)
    return {"report": out / "report.json", "grid": grid}


def save_grid(originals: np.ndarray, recon: dict[str, np.ndarray], path: str | Path, *, n: int = 10) -> Path:
    """PNG with the first n originals on top and each decoder's reconstructions below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, min(n, originals.shape[0]))
    rows = [("original", originals)] + list(recon.items())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.0, 1.25 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(np.clip(imgs[i].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def format_table(report: dict[str, Any]) -> str:
    """A small fixed-width table: one row per decoder, plus RF recovery lines."""
    cols = ("pixel_corr", "ssim", "id_2way", "id_5way")
    lines = [f"{'decoder':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in report["metrics"].items():
        lines.append(f"{name:<12}" + "".join(f"{m[c]:>12.3f}" for c in cols))
    lines.append(f"({report['n_images']} {report['split']} images, {report['image_size'][0]}x"
                 f"{report['image_size'][1]}, windows {report['windows']})")
    for name, rec in (report.get("rf_recovery") or {}).items():
        if rec is None:
            lines.append(f"RF recovery {name}: no learned RF centres in this decoder")
            continue
        parts = [f"{area} {v['median_px']:.2f}px ({v['median_pct_width']:.1f}%)" for area, v in rec.items()]
        lines.append(f"RF recovery {name}: median " + ", ".join(parts))
    return "\n".join(lines)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
