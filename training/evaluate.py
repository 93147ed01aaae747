"""Evaluate a decoder as it is served (ONNX Runtime CPU) and/or as trained (checkpoint) against baselines.

`evaluate(data, model=..., checkpoint=...)` reconstructs one split and scores, beside every decoder:
- the floor: the mean training image, the same for every test image (what a decoder that
  learned nothing about the responses scores);
- ridge regression on the model's windows and on each other window plan given (`baseline_data`:
  spatiotemporal and spatial), alpha chosen on the validation split;
- the oracle ceiling: the original blurred to the RF scale (median V1 RF sigma in pixels).
Metrics (rtdecode.metrics): pixel correlation, SSIM, their gains over the floor (paired), top-1
identification over the whole set with its rank distribution, 2-/5-way identification, all with
seeded bootstrap 95 % intervals over images; feature-space correlation through AlexNet (the
paper's) and/or VGG19 when the user gives their weights files. The strongest baseline is chosen on the validation split (mean pixel
correlation), and each decoder's paired difference from it is reported. RF recovery on the
virtual macaque (learned vs ground-truth centres) as before.
`write_report` saves report.json, report.md (the table), grid.png (originals, floor, best ridge,
decoders, oracle) and ranks.png (the rank distribution).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.errors import ModelError
from rtdecode.metrics import (
    gaussian_blur,
    identification_accuracy,
    interval_summary,
    paired_difference,
    per_image_scores,
    pixel_correlation,
    rf_recovery,
    rf_scale_sigma_px,
)

from .data import DecodingData
from .ridge import RidgeDecoder

log = logging.getLogger(__name__)
RF_META_KEY = "training.rf_centres"
INTERNAL_KEYS = ("reconstructions", "ridge_decoder")  # in-memory only, not written to report.json
FEATURE_NETWORKS = ("alexnet", "vgg19")


def no_feature_weights(network: str) -> str:
    """What the report says where a network's feature correlation was not computed."""
    return (f"not computed: no weights file (give --{network}-weights FILE, a torchvision {network} state dict; "
            "nothing is downloaded)")


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
             split: str = "test", ridge: bool = True, seed: int = 0, threads: int = 2,
             baseline_data: Sequence[DecodingData] = (), oracle: bool = True,
             oracle_sigma_px: float | None = None, vgg_weights: str | Path | None = None,
             alexnet_weights: str | Path | None = None, n_boot: int = 2000) -> dict[str, Any]:
    """Scores of each decoder, the floor, the ridge baselines and the oracle on one split.

    baseline_data: the same recording and split loaded with other window plans (one ridge each).
    Returns the report dict (with in-memory 'reconstructions' and 'ridge_decoder').
    """
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
        "electrodes": int(data.n_electrodes), "data": data.info, "decoders": {}, "baselines": {},
        "metrics": {}, "rf_recovery": {}, "bootstrap": {"n_boot": int(n_boot), "level": 0.95, "seed": int(seed),
                                                        "unit": "test image"},
    }
    recon: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}
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
        roles[name] = "decoder"
        elapsed = time.perf_counter() - t0
        report["decoders"][name] = {"path": str(dec.path), "model_id": c.model_id,
                                    "seconds_per_image": elapsed / x.shape[0]}
        learned = dec.rf_centres()
        if data.rf_true is not None:  # None: this decoder keeps no learned RF centres
            report["rf_recovery"][name] = (None if learned is None else
                                           rf_recovery(learned, data.rf_true, areas, width))
    if "model" in recon and "checkpoint" in recon:  # served graph vs trained module on the same inputs
        report["onnx_vs_checkpoint_max_abs_diff"] = float(np.abs(recon["model"] - recon["checkpoint"]).max())

    val_pc: dict[str, float] = {}  # validation pixel correlation of each baseline (chooses the strongest)
    mean_image = data.train_y.mean(axis=0).astype(np.float32)
    recon["floor"] = np.repeat(mean_image[None], x.shape[0], axis=0)
    roles["floor"] = "baseline"
    report["baselines"]["floor"] = {"kind": "mean training image", "train_images": int(len(np.unique(data.train_ids)))}
    if data.val_y.shape[0]:
        val_pc["floor"] = float(np.mean(pixel_correlation(np.broadcast_to(mean_image, data.val_y.shape), data.val_y)))
    if ridge:
        for d in (data, *baseline_data):
            name = f"ridge_{d.plan.preset}"
            if name in recon:
                raise ModelError(f"two baseline datasets use the window plan {d.plan.preset!r}; give each plan once")
            xd, _, ids_d = d.split(split)
            if not np.array_equal(ids_d, ids):
                raise ModelError(f"{name}: its {split} images differ from the model's; load every window plan "
                                 "from the same recording with the same split and seed")
            t0 = time.perf_counter()
            r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
            recon[name] = r.predict(xd)
            roles[name] = "baseline"
            report["baselines"][name] = {"kind": f"ridge on the {d.plan.preset} windows", "alpha": r.alpha,
                                         "alpha_chosen_on": "val" if r.scores else "none (no validation split)",
                                         "val_mse": {f"{a:.4g}": v for a, v in r.scores.items()},
                                         "fit_seconds": time.perf_counter() - t0, "features": int(r.weight.shape[0])}
            if d.val_x.shape[0]:
                val_pc[name] = float(np.mean(pixel_correlation(r.predict(d.val_x), d.val_y)))
            if d is data:
                report["ridge_decoder"] = r  # fitted on the model's own windows: exportable with its contract
    if oracle:
        sigma, origin = _oracle_sigma(data, oracle_sigma_px)
        if sigma is None:
            report["oracle"] = f"not computed: {origin}"
        else:
            recon["oracle"] = gaussian_blur(y, sigma).astype(np.float32)
            roles["oracle"] = "ceiling"
            report["oracle"] = {"kind": "original blurred with a Gaussian at the RF scale", "sigma_px": sigma,
                                "sigma_from": origin}

    scores = {name: per_image_scores(img, y) for name, img in recon.items()}
    for name, img in recon.items():
        m: dict[str, Any] = {"role": roles[name], "n_images": int(x.shape[0])}
        m.update(interval_summary(scores[name], floor=scores["floor"] if name != "floor" else None,
                                  n_boot=n_boot, seed=seed))
        for k in (2, 5):
            m[f"id_{k}way"] = identification_accuracy(img, y, k, seed=seed) if x.shape[0] >= k else float("nan")
        report["metrics"][name] = m
        log.info("%s on %s: pixel corr %.3f, SSIM %.3f, top-1 %.3f", name, split, m["pixel_corr"], m["ssim"], m["top1"])
    report["per_image"] = {name: {k: v.tolist() for k, v in sc.items() if k != "top1"} for name, sc in scores.items()}

    baselines = [n for n, r in roles.items() if r == "baseline"]
    if val_pc:
        strongest, chosen_on = max(val_pc, key=val_pc.__getitem__), "val"
    else:  # no validation split: fall back to this split, and say so
        strongest, chosen_on = max(baselines, key=lambda n: report["metrics"][n]["pixel_corr"]), split
    ridges = [n for n in baselines if n.startswith("ridge_")]
    best_ridge = max(ridges, key=lambda n: val_pc.get(n, report["metrics"][n]["pixel_corr"])) if ridges else None
    report["strongest_baseline"] = {"name": strongest, "chosen_on": chosen_on, "by": "mean pixel correlation",
                                    "val_pixel_corr": val_pc, "best_ridge": best_ridge}
    report["comparisons"] = {
        name: {"vs": strongest, **{k: paired_difference(scores[name][k], scores[strongest][k], n_boot=n_boot,
                                                        seed=seed) for k in ("pixel_corr", "ssim", "top1")}}
        for name in decoders}
    weights = {"alexnet": alexnet_weights, "vgg19": vgg_weights}
    report["feature_corr"] = {net: no_feature_weights(net) if w is None else
                              _feature_report(net, recon, y, w, n_boot=n_boot, seed=seed) for net, w in weights.items()}

    if data.rf_true is not None and data.rf_known is not None:
        report["rf_recovery"]["layout_known_rfs"] = rf_recovery(data.rf_known, data.rf_true, areas, width)
    if data.rf_true is None:
        report["rf_recovery"] = None
    report["image_ids"] = [int(k) for k in ids]
    report["reconstructions"] = recon
    return report


def _oracle_sigma(data: DecodingData, given: float | None) -> tuple[float | None, str]:
    """The oracle's blur: the given sigma, else the median V1 RF sigma (known RFs, else ground truth)."""
    if given is not None:
        return float(given), "given (--oracle-sigma-px)"
    areas = data.layout.electrode_areas()
    width = data.image_size[1]
    if data.layout.rf_sigmas is not None:
        s = rf_scale_sigma_px(np.asarray(data.layout.rf_sigmas, np.float64)[data.layout.used_channels], areas, width)
        if s is not None:
            return s, "median V1 RF sigma of the layout's mapped RFs"
    if data.rf_sigma_true is not None:
        s = rf_scale_sigma_px(data.rf_sigma_true, areas, width)
        if s is not None:
            return s, "median V1 RF sigma of the simulator's ground truth"
    return None, "no V1 RF widths known (layout or ground truth); give --oracle-sigma-px"


def _feature_report(network: str, recon: dict[str, np.ndarray], originals: np.ndarray, weights: str | Path, *,
                    n_boot: int, seed: int) -> dict[str, Any]:
    """Per-layer feature correlation of every reconstruction set, with intervals and floor gains."""
    from rtdecode.metrics import mean_ci

    from . import feature_corr as fc

    t0 = time.perf_counter()
    if network == "alexnet":
        layers, r = fc.ALEXNET_LAYERS, fc.alexnet_feature_correlations(recon, originals, weights)
    else:
        layers, r = fc.VGG_LAYERS, fc.vgg_feature_correlations(recon, originals, weights)
    out: dict[str, Any] = {"network": network, "weights": str(weights), "layers": list(layers),
                           "unit": "per-image Pearson r of the flattened feature map", "decoders": {}}
    for name, per_layer in r.items():
        entry: dict[str, Any] = {}
        for li, layer in enumerate(layers):
            entry[layer] = mean_ci(per_layer[li], n_boot=n_boot, seed=seed)
            if name != "floor" and "floor" in r:
                entry[layer]["gain_over_floor"] = paired_difference(per_layer[li], r["floor"][li], n_boot=n_boot,
                                                                    seed=seed)
        out["decoders"][name] = entry
    out["seconds"] = time.perf_counter() - t0
    return out


def write_report(report: dict[str, Any], data: DecodingData, out_dir: str | Path, *, n_grid: int = 10,
                 split: str | None = None) -> dict[str, Path]:
    """report.json (without the arrays), report.md (the table), grid.png and ranks.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recon = report.get("reconstructions", {})
    clean = {k: v for k, v in report.items() if k not in INTERNAL_KEYS}
    (out / "report.json").write_text(json.dumps(clean, indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(format_markdown(report) + "\n")
    _, y, _ = data.split(split or report["split"])
    grid = save_grid(y, grid_rows(report, recon), out / "grid.png", n=n_grid)
    paths = {"report": out / "report.json", "table": out / "report.md", "grid": grid}
    if report.get("per_image"):
        paths["ranks"] = save_rank_plot(report, out / "ranks.png")
    return paths


def grid_rows(report: dict[str, Any], recon: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows shown under the originals: floor, best ridge, the decoders, then the oracle."""
    best = (report.get("strongest_baseline") or {}).get("best_ridge")
    names = ["floor", best, *report.get("decoders", {}), "oracle"]
    return {n: recon[n] for n in names if n is not None and n in recon}


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


def save_rank_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Cumulative distribution of each decoder's identification rank over the whole set (chance: diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = int(report["n_images"])
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, per in report["per_image"].items():
        r = np.sort(np.asarray(per["rank"], dtype=np.float64))
        ax.step(r, np.arange(1, r.size + 1) / r.size, where="post", label=name)
    ax.plot([1, n], [1.0 / n, 1.0], color="0.6", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel(f"rank of the true image among all {n} (1 = identified)")
    ax.set_ylabel("fraction of images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _ci(m: dict[str, Any], key: str) -> str:
    lo, hi = m["ci"][key]
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _diff(d: dict[str, float]) -> str:
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table: one row per decoder (means; intervals in report.md), plus summary lines."""
    cols = ("pixel_corr", "ssim", "top1", "id_2way", "id_5way")
    lines = [f"{'decoder':<22}" + "".join(f"{c:>11}" for c in cols) + f"{'rank_med':>10}"]
    for name, m in report["metrics"].items():
        lines.append(f"{name:<22}" + "".join(f"{m[c]:>11.3f}" for c in cols) + f"{m['rank']['median']:>10.1f}")
    lines.append(f"({report['n_images']} {report['split']} images, {report['image_size'][0]}x"
                 f"{report['image_size'][1]}, windows {report['windows']}; top-1 chance {1 / report['n_images']:.3f})")
    lines += _summary_lines(report)
    for name, rec in (report.get("rf_recovery") or {}).items():
        if rec is None:
            lines.append(f"RF recovery {name}: no learned RF centres in this decoder")
            continue
        parts = [f"{area} {v['median_px']:.2f}px ({v['median_pct_width']:.1f}%)" for area, v in rec.items()]
        lines.append(f"RF recovery {name}: median " + ", ".join(parts))
    return "\n".join(lines)


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    sb = report.get("strongest_baseline")
    if sb:
        lines.append(f"strongest baseline: {sb['name']} (highest mean pixel correlation on {sb['chosen_on']})")
    for name, c in (report.get("comparisons") or {}).items():
        lines.append(f"{name} - {c['vs']}: pixel corr {_diff(c['pixel_corr'])}, SSIM {_diff(c['ssim'])}, "
                     f"top-1 {_diff(c['top1'])} (paired 95% CI)")
    o = report.get("oracle")
    if isinstance(o, dict):
        lines.append(f"oracle: originals blurred with sigma {o['sigma_px']:.2f} px ({o['sigma_from']})")
    elif o:
        lines.append(f"oracle: {o}")
    for net, fc in (report.get("feature_corr") or {}).items():
        if isinstance(fc, str):
            lines.append(f"feature correlation ({net}): {fc}")
    return lines


def format_markdown(report: dict[str, Any]) -> str:
    """report.md: every decoder with means, 95% bootstrap intervals and gains over the floor."""
    n = report["n_images"]
    lines = [f"# Reconstruction quality: {report['source']}", "",
             f"{n} {report['split']} images, {report['image_size'][0]}x{report['image_size'][1]}, windows "
             f"{report['windows']}. Brackets: 95% bootstrap intervals over images "
             f"({report['bootstrap']['n_boot']} resamples, seed {report['bootstrap']['seed']}); gains are paired "
             f"differences from the floor (mean training image). Top-1: the true image ranks first among all {n} "
             f"(chance {1 / n:.3f}; chance median rank {(n + 1) / 2:.1f}).", "",
             "| decoder | role | pixel corr | gain over floor | SSIM | gain over floor | top-1 of "
             f"{n} | median rank | 2-way | 5-way |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["metrics"].items():
        g = m.get("gain_over_floor")
        gp, gs = (_diff(g["pixel_corr"]), _diff(g["ssim"])) if g else ("-", "-")
        lines.append(f"| {name} | {m['role']} | {_ci(m, 'pixel_corr')} | {gp} | {_ci(m, 'ssim')} | {gs} | "
                     f"{_ci(m, 'top1')} | {m['rank']['median']:.1f} | {m['id_2way']:.3f} | {m['id_5way']:.3f} |")
    lines.append("")
    lines += [f"- {s}" for s in _summary_lines(report)]
    for name, b in report.get("baselines", {}).items():
        if "alpha" in b:
            lines.append(f"- {name}: alpha {b['alpha']:.3g} chosen on {b['alpha_chosen_on']}, {b['features']} features")
    for fc in (report.get("feature_corr") or {}).values():
        if not isinstance(fc, dict):
            continue
        layers = fc["layers"]
        lines += ["", f"## Feature correlation ({fc['network']}, {fc['unit']})", "",
                  "| decoder | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
        for name, entry in fc["decoders"].items():
            cells = [f"{entry[layer]['mean']:.3f} [{entry[layer]['lo']:.3f}, {entry[layer]['hi']:.3f}]"
                     for layer in layers]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
