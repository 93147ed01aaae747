"""`rtdecode evaluate --model M.onnx --data S.h5`: score a decoder against the ridge baseline.

Writes report.json (pixel correlation, SSIM, 2-/5-way identification per decoder; RF recovery on
the virtual macaque) and grid.png (originals over reconstructions), and prints a small table.
An .onnx alone needs no torch; --checkpoint needs the train extra.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a decoder (ONNX and/or checkpoint) against a ridge baseline",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="an rtdecode .onnx decoder (run with ONNX Runtime on the CPU)")
    p.add_argument("--checkpoint", default=None, help="a training checkpoint .pt (needs torch)")
    p.add_argument("--data", required=True, help="an rtdecode session .h5 or a TVSD folder")
    p.add_argument("--out", default="runs/evaluate", help="folder for report.json and grid.png")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to score")
    p.add_argument("--seed", type=int, default=None,
                   help="split seed (default: the one in the model's training config, else 0)")
    p.add_argument("--things-dir", default=None, help="TVSD only: your local THINGS image folder")
    p.add_argument("--monkey", choices=("N", "F"), default="N", help="TVSD only: which monkey")
    p.add_argument("--no-ridge", action="store_true", help="skip the ridge baseline")
    p.add_argument("--ridge-onnx", default=None, help="also export the fitted ridge baseline to this .onnx")
    p.add_argument("--grid", type=int, default=10, help="images shown in grid.png")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads")
    p.add_argument("--cache-dir", default=None, help="cache the assembled window maps here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import ConfigError

    if not args.model and not args.checkpoint:
        raise ConfigError("give --model M.onnx and/or --checkpoint C.pt")
    from rtdecode.training.data import load_decoding_data
    from rtdecode.training.evaluate import (
        data_options_from_contract,
        evaluate,
        format_table,
        write_report,
    )

    if args.model:
        from ..contract import read_contract

        contract = read_contract(args.model)
    else:
        from rtdecode.training.checkpoint import contract_from_checkpoint, load_checkpoint

        contract = contract_from_checkpoint(load_checkpoint(args.checkpoint), "checkpoint")
    opts = data_options_from_contract(contract)
    if args.seed is not None:
        opts["seed"] = args.seed
    data = load_decoding_data(args.data, things_dir=args.things_dir, monkey=args.monkey, cache_dir=args.cache_dir,
                              progress=not args.no_progress, **opts)
    report = evaluate(data, model=args.model, checkpoint=args.checkpoint, split=args.split,
                      ridge=not args.no_ridge, seed=opts.get("seed", 0), threads=args.threads)
    if args.ridge_onnx and not args.no_ridge:
        from pathlib import Path

        from ..onnx_io import save_model

        Path(args.ridge_onnx).parent.mkdir(parents=True, exist_ok=True)
        ridge = report["ridge_decoder"]
        save_model(ridge.to_onnx(data.contract(f"ridge-alpha{ridge.alpha:.3g}",
                                               {"kind": "ridge", "alpha": ridge.alpha, "source": data.source})),
                   args.ridge_onnx)
        report["ridge"]["onnx"] = args.ridge_onnx
    paths = write_report(report, data, args.out, n_grid=args.grid)
    print(format_table(report))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
