"""The reconstruction-quality ablation: one natural-image virtual-macaque session, one budget per row.

Every row trains the homeomorphic decoder for the same number of steps (same batch, threads,
seed and split) on the same session and is scored on the same held-out test images beside the
mean-image floor, ridge on the spatiotemporal and on the spatial windows (alpha chosen on
validation) and the oracle (the original blurred to the RF scale). Rows:

  base          fast preset, spatiotemporal windows, RFs learned from an uninformative start
                (all at the image centre, broad) with the RF encoding loss, L1 + MSE pixel loss
  spatial       the same with one long window per area (the paper's spatial model)
  fixed-mapped  RFs fixed at the mapped RF centres (the public MonkeySee code's choice)
  learn-mapped  RFs learned, starting from the mapped RF centres
  adv           base + the conditional PatchGAN (w_adv 0.01, as in the paper)
  vgg, vgg-adv  base + the VGG19 feature loss (+ adversarial): only with --vgg19-weights (a file
                the user supplies; nothing is downloaded)
  paper         the paper-size U-Net (16.7 M parameters) at the same step budget

The best row is chosen on the validation split (pixel correlation of the best checkpoint); the
test split is reported once for every row. Writes OUT/quality.json, OUT/quality.md and one
reconstruction grid PNG per row (originals | floor | best ridge | row | oracle).

    python -m rtdecode.benchmarks.quality_study --out benchmarks/results/quality-cpu-2core
    python -m rtdecode.benchmarks.quality_study --smoke --out /tmp/qs      # tiny: seconds, for tests
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.errors import ConfigError
from rtdecode.machine import load_average, machine_facts

log = logging.getLogger(__name__)

# Row name -> (preset, TrainConfig overrides). Every row also gets the study's budget (steps, batch,
# threads, seed) and the common recipe below.
COMMON = {"w_vgg": 0.0, "w_adv": 0.0, "w_l1": 0.5, "w_mse": 0.5, "ema": 0.999, "input_noise": 0.3,
          "lr": 5e-4, "beta1": 0.5, "lr_decay_from": 0.5}
# RFs learned from nothing: all at the image centre (broad), moved by the RF encoding loss alone (the
# decoder's gradient is kept off the RF layer, which otherwise pulls them away), RF lr 20x after 50 steps.
RF_LEARNED = {"learn_rf": True, "rf_init": "centre", "w_rf_encode": 1.0, "rf_lr_scale": 20.0,
              "rf_hold_steps": 50, "rf_decoder_grad": False}
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("fast", {**RF_LEARNED}),
    "spatial": ("fast", {**RF_LEARNED, "windows": "spatial"}),
    "fixed-mapped": ("fast", {"learn_rf": False, "rf_init": "mapped"}),
    "learn-mapped": ("fast", {**RF_LEARNED, "rf_init": "mapped"}),
    "adv": ("fast", {**RF_LEARNED, "w_adv": 0.01}),
    "vgg": ("fast", {**RF_LEARNED, "w_vgg": 1.0}),
    "vgg-adv": ("fast", {**RF_LEARNED, "w_vgg": 1.0, "w_adv": 0.01}),
    "paper": ("paper", {**RF_LEARNED}),
}
NEEDS_VGG = ("vgg", "vgg-adv")


def make_session(path: Path, *, n_images: int, image_size: int, seed: int, image_seed: int,
                 stimuli: str, noise: float) -> dict[str, Any]:
    """The virtual-macaque session every row trains on (monkey N layout, mapped RFs stored)."""
    from rtdecode.layout import tvsd_monkey_n
    from rtdecode.sim import VirtualMacaque

    vm = VirtualMacaque(tvsd_monkey_n(), image_size=image_size, seed=seed, stimuli=stimuli, noise=noise)
    return vm.simulate_session(path, n_images=n_images, known_rfs=True, image_seed=image_seed, progress=True)


def load(path: Path, windows: str, image_size: int, cache: Path, split: tuple[float, float, float]):
    from rtdecode.training.data import load_decoding_data

    return load_decoding_data(path, windows=windows, image_size=image_size, split=split, seed=0, cache_dir=cache)


def baselines(data, data_spatial, n_boot: int) -> dict[str, Any]:
    """Floor, both ridges and the oracle on the test split (training.evaluate.evaluate, no model)."""
    from rtdecode.training.evaluate import evaluate

    return evaluate(data, ridge=True, baseline_data=[data_spatial], n_boot=n_boot)


def train_row(name: str, data, out: Path, *, steps: int, threads: int, batch: int,
              vgg_weights: str | None, session: dict[str, Any]) -> dict[str, Any]:
    """Train one row, export its best checkpoint to ONNX; returns paths, timings and validation."""
    from rtdecode.training.config import preset
    from rtdecode.training.export import export_checkpoint
    from rtdecode.training.train import train

    kind, over = ROWS[name]
    over = {**COMMON, **over}
    over.pop("windows", None)  # the data's window plan decides (loaded per row)
    if "w_vgg" in ROWS[name][1]:
        over["vgg_weights"] = vgg_weights
    cfg = preset(kind).updated(**over, max_steps=steps, batch_size=batch, num_threads=threads, seed=0,
                               image_size=data.image_size[1], val_every=max(2, steps // 10),
                               windows=data.plan.preset)
    run_dir = out / "runs" / name
    t0 = time.monotonic()
    result = train(data, cfg, run_dir, progress=True, data_info=session)
    minutes = (time.monotonic() - t0) / 60.0
    onnx = run_dir / "best.onnx"
    export_checkpoint(result.best, onnx)
    rf = run_dir / "rf_recovery.json"
    return {"config": {"preset": kind, **over, "steps": steps, "batch_size": batch, "threads": threads},
            "train_minutes": minutes, "val_pixel_corr": float(result.best_metric), "onnx": onnx,
            "rf": json.loads(rf.read_text()) if rf.exists() else None}


def score_row(onnx: Path, data, report: dict[str, Any], n_boot: int) -> tuple[dict[str, Any], np.ndarray]:
    """Test metrics of one exported row, with intervals, gains over the floor and vs the strongest baseline."""
    from rtdecode.metrics import interval_summary, paired_difference, per_image_scores
    from rtdecode.training.evaluate import OnnxDecoder, renormalise

    x, y, _ = data.split("test")
    dec = OnnxDecoder(onnx, threads=2)
    recon = dec(renormalise(x, data, dec.contract))
    scores = per_image_scores(recon, y)
    floor = {k: np.asarray(v) for k, v in report["per_image"]["floor"].items()}
    m = interval_summary(scores, floor=floor, n_boot=n_boot)
    strongest = report["strongest_baseline"]["name"]
    ref = {k: np.asarray(v) for k, v in report["per_image"][strongest].items()}
    ref_top1 = (ref["rank"] == 1).astype(np.float64)
    m["vs_strongest_baseline"] = {
        "baseline": strongest,
        "pixel_corr": paired_difference(scores["pixel_corr"], ref["pixel_corr"], n_boot=n_boot),
        "ssim": paired_difference(scores["ssim"], ref["ssim"], n_boot=n_boot),
        "top1": paired_difference(scores["top1"], ref_top1, n_boot=n_boot)}
    return m, recon


def run_study(out: str | Path, *, rows: list[str], n_images: int = 4000, image_size: int = 64, steps: int = 3000,
              threads: int = 1, batch: int = 8, seed: int = 0, image_seed: int = 7, stimuli: str = "naturalistic",
              vgg_weights: str | None = None, n_boot: int = 2000, keep_session: bool = False,
              split: tuple[float, float, float] = (0.7, 0.1, 0.2), noise: float = 3.0) -> dict[str, Any]:
    """Simulate the session, fit the baselines, train and score every row; writes the report files."""
    from rtdecode.training.evaluate import grid_rows, save_grid

    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"unknown study rows {unknown}; expected some of {list(ROWS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    session = out / "session.h5"
    sim = make_session(session, n_images=n_images, image_size=image_size, seed=seed, image_seed=image_seed,
                       stimuli=stimuli, noise=noise)
    cache = out / "cache"
    data = {w: load(session, w, image_size, cache, split) for w in ("spatiotemporal", "spatial")}
    if not keep_session:
        session.unlink(missing_ok=True)  # ~1.6 MB per image; the window maps are in memory (and cache)
    report = baselines(data["spatiotemporal"], data["spatial"], n_boot)
    recon_base = report.pop("reconstructions")
    report.pop("ridge_decoder", None)
    _, y_test, _ = data["spatiotemporal"].split("test")
    results: dict[str, Any] = {}
    for name in rows:
        if name in NEEDS_VGG and vgg_weights is None:
            results[name] = {"skipped": "needs the VGG19 weights file (--vgg19-weights); nothing is downloaded"}
            continue
        d = data[ROWS[name][1].get("windows", "spatiotemporal")]
        log.info("row %s: training %d steps", name, steps)
        row = train_row(name, d, out, steps=steps, threads=threads, batch=batch, vgg_weights=vgg_weights,
                        session={"source": "virtual macaque (quality study)", "sim_seed": seed,
                                 "image_seed": image_seed, "stimuli": stimuli, "n_images": n_images,
                                 "noise": noise})
        m, recon = score_row(row["onnx"], d, report, n_boot)
        row["test"] = m
        row["onnx"] = str(Path(row["onnx"]).relative_to(out))
        grid = grid_rows(report, recon_base)
        grid = {k: v for k, v in grid.items() if k != "oracle"} | {name: recon} | (
            {"oracle": recon_base["oracle"]} if "oracle" in recon_base else {})
        save_grid(y_test, grid, out / f"grid-{name}.png")
        results[name] = row
        _write(out, sim, report, results, locals_for_meta(n_images, image_size, steps, threads, batch, seed,
                                                            image_seed, stimuli, t_start, noise))
    trained = {k: v for k, v in results.items() if "val_pixel_corr" in v}
    best = max(trained, key=lambda k: trained[k]["val_pixel_corr"]) if trained else None
    study = _write(out, sim, report, results, locals_for_meta(n_images, image_size, steps, threads, batch, seed,
                                                               image_seed, stimuli, t_start, noise), best=best)
    if not keep_session:
        shutil.rmtree(cache, ignore_errors=True)
    return study


def locals_for_meta(n_images, image_size, steps, threads, batch, seed, image_seed, stimuli, t_start,
                    noise) -> dict:
    return {"n_images": n_images, "image_size": image_size, "steps": steps, "threads": threads, "batch": batch,
            "seed": seed, "image_seed": image_seed, "stimuli": stimuli, "noise": noise,
            "wall_minutes": (time.monotonic() - t_start) / 60.0}


def _write(out: Path, sim: dict, report: dict, results: dict, budget: dict, best: str | None = None) -> dict:
    base = {n: m for n, m in report["metrics"].items()}
    study = {"schema": "rtdecode-quality-study/1", "machine": machine_facts(), "load_average": load_average(),
             "budget": budget, "session": {k: v for k, v in sim.items() if k != "path"},
             "split": {"train": int(report["data"].get("n_train_images", 0)) if isinstance(report.get("data"), dict)
                       else None, "test_images": report["n_images"]},
             "baselines": base, "strongest_baseline": report["strongest_baseline"],
             "oracle": report.get("oracle"), "rows": results, "best_row_on_val": best}
    (out / "quality.json").write_text(json.dumps(study, indent=2, default=_json))
    (out / "quality.md").write_text(markdown(study))
    return study


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _ci(m: dict, key: str) -> str:
    lo, hi = m["ci"][key]
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _gain(m: dict, key: str) -> str:
    g = (m.get("gain_over_floor") or {}).get(key)
    return "-" if not g else f"{g['mean']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]"


def _diff(d: dict) -> str:
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def markdown(study: dict) -> str:
    """The committed table: baselines, then one line per row, then the RF recovery per row."""
    b = study["budget"]
    lines = [f"# Reconstruction quality study ({b['stimuli']} virtual macaque)", "",
             f"Session: {b['n_images']} {b['stimuli']} images at {b['image_size']}x{b['image_size']}, monkey N "
             f"layout, simulator seed {b['seed']}, noise {b['noise']:g}, image seed {b['image_seed']}; test images: "
             f"{study['split']['test_images']} (split by image, held out). Budget per row: {b['steps']} steps, "
             f"batch {b['batch']}, {b['threads']} threads, seed 0. Machine: {study['machine'].get('cpu_model')}, "
             f"{study['machine'].get('cores')} cores. Wall time so far: {b['wall_minutes']:.0f} min.",
             "", "95 % intervals: bootstrap over test images (2000 resamples). Gains over the floor and "
             "differences vs the strongest baseline are paired over the same images.", "",
             "| decoder | val pixel corr | pixel corr [95% CI] | gain over floor | SSIM [95% CI] | gain over floor "
             "| top-1 of all test | vs strongest baseline: pixel corr / SSIM / top-1 | train min |",
             "|---|---|---|---|---|---|---|---|---|"]
    sb = study["strongest_baseline"]
    for name, m in study["baselines"].items():
        tag = " (strongest baseline, chosen on val)" if name == sb["name"] else ""
        val = sb.get("val_pixel_corr", {}).get(name)
        lines.append(f"| {name}{tag} | {'-' if val is None else f'{val:.3f}'} | {_ci(m, 'pixel_corr')} | "
                     f"{_gain(m, 'pixel_corr')} | {_ci(m, 'ssim')} | {_gain(m, 'ssim')} | {_ci(m, 'top1')} | - | - |")
    for name, r in study["rows"].items():
        if "skipped" in r:
            lines.append(f"| **{name}** | not run: {r['skipped']} | | | | | | | |")
            continue
        m = r["test"]
        v = m["vs_strongest_baseline"]
        star = " (best on val)" if name == study.get("best_row_on_val") else ""
        lines.append(f"| **{name}**{star} | {r['val_pixel_corr']:.3f} | {_ci(m, 'pixel_corr')} | "
                     f"{_gain(m, 'pixel_corr')} | {_ci(m, 'ssim')} | {_gain(m, 'ssim')} | {_ci(m, 'top1')} | "
                     f"{_diff(v['pixel_corr'])} / {_diff(v['ssim'])} / {_diff(v['top1'])} | "
                     f"{r['train_minutes']:.1f} |")
    lines += ["", "## Learned RF centres (median error, % of image width)", "",
              "| row | area | init vs true | learned vs true | learned vs other monkey | other monkey vs true |",
              "|---|---|---|---|---|---|"]
    for name, r in study["rows"].items():
        rf = r.get("rf") if isinstance(r, dict) else None
        for area, a in ((rf or {}).get("areas") or {}).items():
            lines.append(f"| {name} | {area} | {_f(a.get('init_vs_true'))} | {_f(a.get('learned_vs_true'))} | "
                         f"{_f(a.get('learned_vs_other'))} | {_f(a.get('other_vs_true'))} |")
    lines += ["", "Grids: `grid-<row>.png` (originals | floor | best ridge | row | oracle)."]
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtdecode.benchmarks.quality_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (quality.json, quality.md, grid-*.png, runs/)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, of {list(ROWS)}")
    p.add_argument("--n-images", type=int, default=4000, help="images in the session (split 0.7/0.1/0.2 by image)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps per row (the budget)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training run (1: a second thread on a busy 2-core box spins)")
    p.add_argument("--noise", type=float, default=3.0,
                   help="simulator noise scale (3: single-trial reliability near a real array's, see docs/quality.md)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--stimuli", default="naturalistic", help="naturalistic, photos or dead-leaves")
    p.add_argument("--image-seed", type=int, default=7)
    p.add_argument("--vgg19-weights", default=None, help="VGG19 weights file (rows vgg, vgg-adv)")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--keep-session", action="store_true", help="keep session.h5 and the map cache")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test: 40 images, 16 px, 4 steps")
    p.add_argument("--report-only", action="store_true",
                   help="re-render OUT/quality.md from OUT/quality.json (best row on val chosen again)")
    a = p.parse_args(argv)
    if a.report_only:
        path = Path(a.out) / "quality.json"
        study = json.loads(path.read_text())
        trained = {k: v for k, v in study["rows"].items() if "val_pixel_corr" in v}
        study["best_row_on_val"] = max(trained, key=lambda k: trained[k]["val_pixel_corr"]) if trained else None
        path.write_text(json.dumps(study, indent=2))
        (Path(a.out) / "quality.md").write_text(markdown(study))
        print(markdown(study))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kw: dict[str, Any] = {"n_images": a.n_images, "image_size": a.image_size, "steps": a.steps,
                          "threads": a.threads, "batch": a.batch, "stimuli": a.stimuli, "image_seed": a.image_seed,
                          "vgg_weights": a.vgg19_weights, "n_boot": a.n_boot, "keep_session": a.keep_session,
                          "noise": a.noise}
    if a.smoke:
        kw.update(n_images=40, image_size=16, steps=4, n_boot=50, threads=1)
    study = run_study(a.out, rows=[r for r in a.rows.split(",") if r], **kw)
    print(markdown(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
