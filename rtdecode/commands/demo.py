"""`rtdecode demo`: simulate a session, stream it, decode it live, save an animation and latencies.

The demo itself is rtdecode.demo.run_demo (on the loopback rig, rtdecode.rig).
"""

from __future__ import annotations

import argparse

from ..demo import DEFAULT_IMAGE_SEED, DEFAULT_N_IMAGES, DEFAULT_SEED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a session, stream it, decode it live, save an animation and latencies",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--model", default=None, help="decoder .onnx; None = the bundled demo model")
    p.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES,
                   help="images in the demo session (400 ms each)")
    p.add_argument("--seed", type=int, default=None,
                   help="virtual-macaque seed; None = the model's (training_config data.sim_seed), else "
                        f"{DEFAULT_SEED}, the seed the bundled model was trained with")
    p.add_argument("--image-seed", type=int, default=DEFAULT_IMAGE_SEED,
                   help="seed of the demo images (differs from the training images)")
    p.add_argument("--stimuli", default=None, choices=("dead-leaves", "naturalistic", "photos"),
                   help="kind of demo images; None = the kind the model was trained on (training_config "
                        "data.stimuli), else dead-leaves")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed")
    p.add_argument("--stride-ms", type=float, default=16.0, help="decode one frame per this many ms of data")
    p.add_argument("--engine", default="onnxruntime", help="inference engine (see `rtdecode serve --help`)")
    p.add_argument("--threads", type=int, default=None, help="engine threads; None = the engine's default")
    p.add_argument("--tile", type=int, default=160, help="panel tile size in pixels")
    p.add_argument("--keep-session", action="store_true",
                   help="keep the regenerated session .h5 in the output folder (~130 MB for 80 images)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo, summary_text

    summary = run_demo(args.out, model=args.model, n_images=args.n_images, seed=args.seed,
                       image_seed=args.image_seed, stimuli=args.stimuli, speed=args.speed, stride_ms=args.stride_ms,
                       engine=args.engine, threads=args.threads, tile=args.tile,
                       keep_session=args.keep_session)
    print(summary_text(summary))
    return 0 if summary["frames_received"] > 0 else 1
