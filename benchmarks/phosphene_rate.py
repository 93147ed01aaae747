"""Phosphene rendering rate: frames/s of PhospheneRenderer on this machine, with baselines.

Times render(frame) (stimulation + brightness + drawing) per frame with time.perf_counter after a
warm-up, for 1024 phosphenes at several output sizes (builtin: sparse blob atlas + bincount), and
compares in the same run at 256 x 256 with
  - the separable matrix product Gy^T diag(b) Gx (BLAS, multi-threaded);
  - a dense blob atlas (every phosphene's full-image Gaussian stored, image = atlas^T b), the
    obvious implementation the separable form replaces;
  - dynaphos' GaussianSimulator (backend "dynaphos"), where dynaphos and its dependencies exist;
  - pulse2percept's cortical ScoreboardModel (backend "pulse2percept", implant "grid": the same
    1024 phosphenes as point electrodes in the Polimeni map) at 128 x 128 and 256 x 256, on one
    OpenMP thread (as rtdecode runs it) and on all cores, where pulse2percept is installed.
Writes JSON, a markdown table and phosphene_backends.png ([frame | builtin | pulse2percept grid |
pulse2percept Cortivis array], one frame) to --out.

  python -m rtdecode.benchmarks.phosphene_rate [--frames 300] [--out benchmarks/results/phosphene]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("phosphene_rate")


def _time_calls(fn, n: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def _row(name: str, size: int, ms: np.ndarray, **extra) -> dict:
    from rtdecode.telemetry import latency_summary

    s = latency_summary(ms)
    return {"method": name, "size": f"{size}x{size}", "fps_median": 1e3 / s["p50_ms"], "ms": s, **extra}


def run(frames: int = 300, sizes=(128, 256, 512), n_phosphenes: int = 1024, input_size: int = 128,
        dynaphos_frames: int = 5, p2p_frames: int = 10, out: Path | None = None) -> dict:
    import importlib.util

    from rtdecode.display.phosphene import PhospheneRenderer

    rng = np.random.default_rng(0)
    # a smooth natural-ish test frame: low-pass noise, like a decoder's output
    noise = rng.random((input_size // 8, input_size // 8, 3))
    frame = (np.kron(noise, np.ones((8, 8, 1))) * 255).astype(np.uint8)
    rows = []
    for size in sizes:
        r = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(size, size), seed=0)
        ms = _time_calls(lambda r=r: r.render(frame), frames, warmup=20)
        stim_ms = _time_calls(lambda r=r: r.stimulation(frame), frames, warmup=5)
        b = r.brightness(r.stimulation(frame)).copy()
        draw_ms = _time_calls(lambda r=r, b=b: r.draw(b), frames, warmup=5)
        rows.append(_row("builtin (sparse blob atlas)", size, ms,
                         stimulation_ms_p50=float(np.median(stim_ms)), draw_ms_p50=float(np.median(draw_ms))))
        log.info("builtin %dx%d: %.1f frames/s", size, size, rows[-1]["fps_median"])
    # baselines at 256x256: the separable matrix product and a dense atlas, same stimulation
    size = 256
    r = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(size, size), seed=0)
    gy_t = np.ascontiguousarray(r._gy.T)  # [H, N]
    scaled = np.empty_like(r._gx)
    canvas2 = np.empty((size, size), np.float32)

    def separable():
        b = r.brightness(r.stimulation(frame))
        np.multiply(r._gx, b[:, None], out=scaled)
        np.matmul(gy_t, scaled, out=canvas2)
        return r._to_uint8(canvas2)

    rows.append(_row("separable Gy^T diag(b) Gx (BLAS matmul)", size, _time_calls(separable, frames, warmup=10)))
    log.info("separable matmul: %.1f frames/s", rows[-1]["fps_median"])
    np.testing.assert_allclose(separable().astype(float), r.render(frame).astype(float), atol=1.0)
    atlas = (r._gy[:, :, None] * r._gx[:, None, :]).reshape(n_phosphenes, -1)  # [N, H*W]
    canvas = np.empty(size * size, np.float32)

    def dense():
        b = r.brightness(r.stimulation(frame))
        np.matmul(b, atlas, out=canvas)
        return r._to_uint8(canvas.reshape(size, size))

    rows.append(_row("dense blob atlas (baseline)", size, _time_calls(dense, max(30, frames // 5), warmup=3),
                     atlas_mib=atlas.nbytes / 2**20))
    log.info("dense atlas: %.1f frames/s", rows[-1]["fps_median"])
    deps = ("dynaphos", "torch", "yaml", "scipy", "cv2")
    if all(importlib.util.find_spec(m) for m in deps) and dynaphos_frames > 0:
        d = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(size, size), seed=0, backend="dynaphos")
        rows.append(_row("dynaphos GaussianSimulator", size,
                         _time_calls(lambda: d.render(frame), dynaphos_frames, warmup=1)))
        log.info("dynaphos: %.2f frames/s", rows[-1]["fps_median"])
    else:
        rows.append({"method": "dynaphos GaussianSimulator", "size": f"{size}x{size}",
                     "skipped": "dynaphos or one of its dependencies is not installed"})
    if importlib.util.find_spec("pulse2percept") and p2p_frames > 0:
        import os

        cores = os.cpu_count() or 1
        for size, threads in ((128, 1), (256, 1), (256, cores)):
            p = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(size, size), seed=0, backend="pulse2percept",
                                  p2p_threads=threads)
            rows.append(_row(f"pulse2percept ScoreboardModel, grid, {threads} thread(s)", size,
                             _time_calls(lambda p=p: p.render(frame), p2p_frames, warmup=1)))
            log.info("pulse2percept %dx%d, %d thread(s): %.2f frames/s", size, size, threads, rows[-1]["fps_median"])
        if out is not None:
            _comparison_png(n_phosphenes, Path(out) / "phosphene_backends.png")
    else:
        rows.append({"method": "pulse2percept ScoreboardModel", "size": f"{size}x{size}",
                     "skipped": "pulse2percept is not installed (pip install 'rtdecode[p2p]')"})
    return {"benchmark": "phosphene_rate", "n_phosphenes": n_phosphenes, "input": f"{input_size}x{input_size}x3 uint8",
            "frames_per_config": frames, "rows": rows}


def _comparison_png(n_phosphenes: int, path: Path, size: int = 256) -> Path:
    """[frame | builtin | pulse2percept grid | pulse2percept Cortivis] for one test scene, labelled."""
    from PIL import Image, ImageDraw

    from rtdecode.display.phosphene import PhospheneRenderer

    yy, xx = np.mgrid[0:128, 0:128]
    frame = np.zeros((128, 128, 3), np.uint8)  # a scene with shapes: a disc, a bar, a ramp
    frame[((xx - 88) ** 2 + (yy - 40) ** 2) < 18 ** 2] = 255
    frame[76:92, 16:112] = 200
    frame[100:124, :, :] = (xx[100:124, :, None] * 2).astype(np.uint8)
    panels = [("frame", np.asarray(Image.fromarray(frame).resize((size, size), Image.NEAREST)))]
    for label, kw in (("builtin", {}), ("pulse2percept grid", {"backend": "pulse2percept"}),
                      ("pulse2percept Cortivis (96)", {"backend": "pulse2percept", "p2p_implant": "cortivis",
                                                        "p2p_at_deg": (-2.0, 2.5)})):
        r = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(size, size), seed=0, **kw)
        panels.append((label, r.render(frame).copy()))
    gap, top = 6, 22
    canvas = Image.new("RGB", (len(panels) * (size + gap) + gap, size + top + gap), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for k, (label, img) in enumerate(panels):
        x = gap + k * (size + gap)
        canvas.paste(Image.fromarray(img), (x, top))
        draw.text((x, 5), label, fill=(230, 230, 230))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def markdown(results: dict, machine: dict) -> str:
    from .report import markdown_table

    head = (f"# Phosphene rendering rate\n\n{results['n_phosphenes']} phosphenes, input {results['input']}; "
            f"machine: {machine['cpu_model']}, {machine['cores']} cores, numpy {machine['packages'].get('numpy')}; "
            f"load average (1/5/15 min) before/after: {results.get('load_average_before_after')}.\n\n")
    cols = [("method", "method"), ("output", "size"), ("frames/s (median)", "fps_median"),
            ("p50 ms", "ms.p50_ms"), ("p99 ms", "ms.p99_ms"), ("max ms", "ms.max_ms"),
            ("stimulation p50 ms", "stimulation_ms_p50"), ("draw p50 ms", "draw_ms_p50"), ("skipped", "skipped")]
    return head + markdown_table(results["rows"], cols) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300, help="timed frames per configuration")
    p.add_argument("--phosphenes", type=int, default=1024)
    p.add_argument("--dynaphos-frames", type=int, default=5, help="0 skips dynaphos")
    p.add_argument("--p2p-frames", type=int, default=10, help="0 skips pulse2percept")
    p.add_argument("--out", default="benchmarks/results/phosphene", help="output folder (JSON + markdown)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from rtdecode.machine import machine_facts

    machine = machine_facts()
    load_before = machine.get("load_average_1_5_15")
    results = run(frames=args.frames, n_phosphenes=args.phosphenes, dynaphos_frames=args.dynaphos_frames,
                  p2p_frames=args.p2p_frames, out=Path(args.out))
    results["machine"] = machine
    results["load_average_before_after"] = [load_before, machine_facts().get("load_average_1_5_15")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "phosphene_rate.json").write_text(json.dumps(results, indent=2, default=str))
    md = markdown(results, machine)
    (out / "phosphene_rate.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
