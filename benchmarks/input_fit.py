"""Which statistic tells the right virtual monkey from another one? (input-fit monitor, rtdecode.fit)

Fits the input-fit statistics on a session of the bundled demo model's virtual monkey (seed 0,
noise 3, naturalistic images) and scores 2-s blocks (40 sliding windows, one per 50 ms) of:
the same monkey on new images (held-out time and new images), other monkeys (same layout,
other seeds: other RFs, baselines, gains), pure noise with each channel's mean and sd, another monkey whose channels were matched to
the right one's mean and sd (so only the spatial structure differs), the
same monkey with one area flat (dead), and the same monkey scaled x1.5. Four candidate
statistics per area: the mean shift (mean over inputs of the block mean squared), the second
moment, the fraction of a window's energy in the training top-k subspace, and the
probabilistic-PCA score that rtdecode.fit uses. Writes a PNG and a JSON under --out.

    python -m rtdecode.benchmarks.input_fit --out benchmarks/results/input-fit
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rtdecode.contract import read_contract
from rtdecode.demo import bundled_model
from rtdecode.fit import FitMonitor, area_indices, compute_fit_stats, sliding_windows
from rtdecode.sim.macaque import VirtualMacaque


def simulate(contract, seed: int, n_images: int, image_seed: int) -> np.ndarray:
    vm = VirtualMacaque(contract.layout, image_size=contract.image_height, seed=seed, noise=3.0,
                        stimuli="naturalistic")
    rec = vm.recording(n_images=n_images, image_seed=image_seed)
    return np.concatenate([b.mua for b in rec.blocks()], axis=0)


def candidates(stats, windows: np.ndarray, idx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{statistic: [n_blocks, A]} for consecutive sampled windows."""
    nb = len(windows) // stats.block
    w = windows[:nb * stats.block].reshape(nb, stats.block, -1)
    out = {k: np.zeros((nb, len(stats.areas))) for k in ("mean shift", "second moment", "subspace fraction",
                                                           "ppca score (used)")}
    for j, a in enumerate(stats.areas):
        x = w[:, :, idx[a.name]]
        out["mean shift"][:, j] = (x.mean(1) ** 2).mean(1)
        out["second moment"][:, j] = (x * x).mean((1, 2))
        xc = x.reshape(-1, a.dims) - a.mean
        z = xc @ a.basis
        out["subspace fraction"][:, j] = ((z * z).sum(1) / np.maximum((xc * xc).sum(1), 1e-12)).reshape(nb, -1).mean(1)
        out["ppca score (used)"][:, j] = a.scores(w.reshape(nb * stats.block, -1)).reshape(nb, -1).mean(1)
    return out


def monitor_cost(stats, windows: np.ndarray, serve_stride: int = 16, repeats: int = 2000) -> dict[str, float]:
    """Per-call cost of FitMonitor.observe: a frame it passes over, a frame it scores, and the
    mean per frame at a serve stride of `serve_stride` samples (medians of `repeats` calls)."""
    mon = FitMonitor(stats)
    x = np.ascontiguousarray(windows[0])
    t_skip, t_score = [], []
    for i in range(repeats):
        mon._next = 1 << 40  # passed over
        t0 = time.perf_counter()
        mon.observe(0, x)
        t_skip.append(time.perf_counter() - t0)
        mon._next = 0  # scored
        t0 = time.perf_counter()
        mon.observe(i, x)
        t_score.append(time.perf_counter() - t0)
    skip, score = float(np.median(t_skip)) * 1e6, float(np.median(t_score)) * 1e6
    frac = serve_stride / stats.stride  # share of frames scored
    return {"passed_over_us": skip, "scored_us": score, "scored_p99_us": float(np.percentile(t_score, 99)) * 1e6,
            f"mean_per_frame_at_{serve_stride}ms_us": frac * score + (1 - frac) * skip}


def _flagged(stats, res) -> dict[str, float]:
    lo = np.array([ar.lo for ar in stats.areas])
    hi = np.array([ar.hi for ar in stats.areas])
    return {name: float(((r["ppca score (used)"] < lo) | (r["ppca score (used)"] > hi)).any(1).mean())
            for name, r in res.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/input-fit")
    p.add_argument("--fit-images", type=int, default=400, help="images in the fitting session (0.4 s each)")
    p.add_argument("--test-images", type=int, default=100)
    p.add_argument("--k", type=int, nargs="+", default=[8, 16, 32])
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    c = read_contract(bundled_model())
    t0 = time.monotonic()
    print(f"simulating the fitting session ({a.fit_images} images)...", flush=True)
    fit_mua = simulate(c, 0, a.fit_images, image_seed=101)
    stats_by_k = {k: compute_fit_stats(fit_mua, c, k=k, info={"source": "virtual macaque seed 0 image seed 101"})
                  for k in a.k}
    ch_mean, ch_sd = fit_mua.mean(0), fit_mua.std(0)
    del fit_mua
    print(f"fitted in {time.monotonic() - t0:.0f} s", flush=True)
    idx = area_indices(c)
    right = simulate(c, 0, a.test_images, image_seed=202)
    conds: dict[str, np.ndarray] = {"right monkey": right}
    for s in (1, 2, 3):
        conds[f"other monkey {s}"] = simulate(c, s, a.test_images, image_seed=202)
    o = conds["other monkey 1"]
    conds["other 1, channels matched"] = ((o - o.mean(0)) / o.std(0) * ch_sd + ch_mean).astype(np.float32)
    rng = np.random.default_rng(5)
    conds["noise"] = (ch_mean + ch_sd * rng.standard_normal(right.shape)).astype(np.float32)
    flat = right.copy()
    v4 = np.flatnonzero(np.asarray(c.layout.areas) == "V4")
    flat[:, v4] = ch_mean[v4]
    conds["V4 flat"] = flat
    conds["scaled x1.5"] = right * 1.5
    print(f"simulated test conditions ({time.monotonic() - t0:.0f} s)", flush=True)
    stride = stats_by_k[a.k[0]].stride
    wins = {name: sliding_windows(m, c, stride, start=500) for name, m in conds.items()}
    del conds, right, flat
    report: dict = {"fit_images": a.fit_images, "test_images": a.test_images, "block_s": 2.0, "results": {}}
    for k, stats in stats_by_k.items():
        res = {name: candidates(stats, w, idx) for name, w in wins.items()}
        report["results"][f"k={k}"] = {
            "range": {ar.name: [ar.lo, ar.hi] for ar in stats.areas},
            "heldout": {ar.name: ar.heldout for ar in stats.areas},
            "blocks": {name: {st: {ar.name: [float(v.min()), float(np.median(v)), float(v.max())]
                                   for ar, v in zip(stats.areas, r[st].T, strict=True)} for st in r}
                       for name, r in res.items()},
            "flagged_fraction": _flagged(stats, res)}
        print(f"k={k}: blocks flagged: " + ", ".join(f"{n} {f:.2f}" for n, f in
                                                     report["results"][f"k={k}"]["flagged_fraction"].items()))
    if c.fit_stats is not None:  # the figure shows what the bundled model carries (rtdecode fit-stats)
        stats = c.fit_stats
        res = {name: candidates(stats, w, idx) for name, w in wins.items()}
        report["results"]["bundled model"] = {
            "range": {ar.name: [ar.lo, ar.hi] for ar in stats.areas},
            "blocks": {name: {ar.name: [float(v.min()), float(np.median(v)), float(v.max())]
                              for ar, v in zip(stats.areas, r["ppca score (used)"].T, strict=True)}
                       for name, r in res.items()},
            "flagged_fraction": _flagged(stats, res)}
        print("bundled model: blocks flagged: " + ", ".join(
            f"{n} {f:.2f}" for n, f in report["results"]["bundled model"]["flagged_fraction"].items()))
    fig_res, fig_stats = res, stats
    report["cost_us"] = monitor_cost(stats, wins["right monkey"])
    print("monitor cost (us): " + json.dumps(report["cost_us"]))
    (out / "input-fit.json").write_text(json.dumps(report, indent=1))
    _figure(fig_res, fig_stats, out / "input-fit.png")
    print(f"wrote {out}/input-fit.png and input-fit.json ({time.monotonic() - t0:.0f} s)")
    return 0


def _figure(res, stats, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res)
    stat_names = list(res[names[0]])
    fig, axes = plt.subplots(len(stat_names), len(stats.areas), figsize=(4.2 * len(stats.areas), 3.0 * len(stat_names)),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for i, st in enumerate(stat_names):
        ref = res["right monkey"][st]
        for j, ar in enumerate(stats.areas):
            ax = axes[i, j]
            for n, name in enumerate(names):
                v = res[name][st][:, j]
                ax.scatter(np.full(v.size, n) + np.linspace(-0.25, 0.25, v.size), v, s=8, color=colours(n))
            if st.startswith("ppca"):
                ax.axhspan(ar.lo, ar.hi, color="green", alpha=0.2)
            else:
                ax.axhspan(ref[:, j].min(), ref[:, j].max(), color="grey", alpha=0.2)
            if st != "subspace fraction":
                ax.set_yscale("log")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{ar.name}: {st}" + (" (green: accepted range)" if st.startswith("ppca")
                                                 else " (grey: right monkey's span)"), fontsize=9)
    fig.suptitle(f"input fit: 2-s blocks ({stats.block} windows, one per {stats.stride} ms), demo model's monkey "
                 "vs other inputs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
