"""`rtdecode train --data S.h5`: train the homeomorphic decoder (needs the train extra: torch).

Several processes (DistributedDataParallel): `torchrun --nproc-per-node N -m rtdecode train --ddp ...`
(training/distributed.py; docs/training.md, 'Several processes or GPUs').
"""

from __future__ import annotations

import argparse

from .nwb_options import add_nwb_options, nwb_selection


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the homeomorphic decoder on a recorded/simulated session or TVSD",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="an rtdecode session .h5 (e.g. from `rtdecode simulate`), an NWB file (.nwb) or a TVSD folder")
    p.add_argument("--preset", choices=("fast", "paper"), default=None,
                   help="base configuration (fast: 64x64 CPU demo model; paper: MonkeySee 96x96); fast when omitted%(default).0s")
    p.add_argument("--config", default=None, help="a JSON TrainConfig file (its 'preset' key picks the base)%(default).0s")
    p.add_argument("--windows", choices=("spatiotemporal", "spatial"), default=None,
                   help="input maps: 3 areas x 5 time windows, or one long window per array; preset: spatiotemporal%(default).0s")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (fast 30, paper 100)%(default).0s")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (overrides --epochs)%(default).0s")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (preset: 8)%(default).0s")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (preset: 2e-4)%(default).0s")
    p.add_argument("--w-adv", type=float, default=None, help="adversarial loss weight, 0: no discriminator (preset: 0.01)%(default).0s")
    p.add_argument("--w-vgg", type=float, default=None, help="VGG19 feature loss weight, needs --vgg-weights (preset: 1.0)%(default).0s")
    p.add_argument("--w-l1", type=float, default=None, help="L1 pixel loss weight (preset: 0.5)%(default).0s")
    p.add_argument("--vgg-weights", default=None,
                   help="torchvision vgg19 state dict (.pth) or .safetensors; without it the VGG loss is off%(default).0s")
    p.add_argument("--rf-init", choices=("mapped", "centre", "grid"), default=None,
                   help="RF start: the layout's mapped RFs, or uninformative (all at the image centre / on a grid, "
                        "width rf_init_sigma); preset: mapped%(default).0s")
    p.add_argument("--w-rf-encode", type=float, default=None,
                   help="RF encoding loss weight: each RF's Gaussian must explain its electrode's response "
                        "(see docs/training.md, 'Learning the RFs'); preset: 0%(default).0s")
    p.add_argument("--out", default="runs/train", help="output folder: best.pt, last.pt, config.json, history.jsonl")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="training device (preset: cpu)%(default).0s")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and batch order (preset: 0)%(default).0s")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads, 0: min(2, cores) (preset: 0)%(default).0s")
    p.add_argument("--resume", default=None, help="continue from this checkpoint (its config is used)%(default).0s")
    p.add_argument("--cache-dir", default=None, help="cache the assembled window maps here%(default).0s")
    p.add_argument("--things-dir", default=None, help="TVSD only: your local THINGS image folder%(default).0s")
    p.add_argument("--monkey", choices=("N", "F"), default="N", help="TVSD only: which monkey")
    add_nwb_options(p)
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--ddp", action="store_true",
                   help="one of N DistributedDataParallel processes started by torchrun (gloo on cpu, NCCL on cuda); "
                        "--batch-size is per process, rank 0 writes the output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("training needs torch: pip install 'rtdecode[train]' (or the torch build for your GPU)") from None
    from rtdecode.training.config import load_config
    from rtdecode.training.distributed import check_launch, distributed
    from rtdecode.training.train import resume_config, train_from_source

    check_launch(args.ddp)  # before any data is read: --ddp without torchrun, torchrun without --ddp

    overrides = {"windows": args.windows, "epochs": args.epochs, "max_steps": args.max_steps,
                 "batch_size": args.batch_size, "lr": args.lr, "w_adv": args.w_adv, "w_vgg": args.w_vgg,
                 "w_l1": args.w_l1, "vgg_weights": args.vgg_weights, "device": args.device, "seed": args.seed,
                 "num_threads": args.threads, "rf_init": args.rf_init, "w_rf_encode": args.w_rf_encode}
    if args.resume:
        config = resume_config(args.resume, **{k: overrides[k] for k in
                                               ("epochs", "max_steps", "device", "num_threads", "vgg_weights")})
    else:
        config = load_config(args.config, args.preset, **overrides)
    with distributed(args.ddp, config.device) as dist:
        result = train_from_source(args.data, config, args.out, resume=args.resume, cache_dir=args.cache_dir,
                                   things_dir=args.things_dir, monkey=args.monkey, progress=not args.no_progress,
                                   nwb=nwb_selection(args), dist=dist)
    if not dist.is_main:
        return 0
    if result.note:
        print(f"note: {result.note}")
    last = result.history[-1] if result.history else {}
    print(f"trained {result.step} steps; best val {config.val_metric} {result.best_metric:.4f}"
          + (f", last val pixel corr {last.get('val_pixel_corr')}" if last else "")
          + f"; checkpoints {result.best} and {result.last}")
    return 0
