"""`rtdecode evaluate --model M.onnx --data S.h5`: score a decoder against the floor, ridge baselines and oracle.

Beside the decoder(s): the mean training image (floor), ridge on the spatiotemporal and on the
spatial windows (alpha chosen on validation), and the originals blurred to the RF scale (oracle).
Writes report.json (pixel correlation and SSIM with their gains over the floor, top-1 of the whole
set and its rank distribution, 2-/5-way identification, 95% bootstrap intervals; the strongest
baseline, chosen on validation, and each decoder's paired difference from it; RF recovery on the
virtual macaque), report.md (the table), grid.png and ranks.png, and prints a small table.
An .onnx alone needs no torch; --checkpoint and --alexnet-/--vgg19-weights need the train extra.
"""

from __future__ import annotations

import argparse

from .nwb_options import add_nwb_options, nwb_selection


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a decoder (ONNX and/or checkpoint) against a ridge baseline",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="an rtdecode .onnx decoder (run with ONNX Runtime on the CPU)")
    p.add_argument("--checkpoint", default=None, help="a training checkpoint .pt (needs torch)")
    p.add_argument("--data", required=True, help="an rtdecode session .h5, an NWB file (.nwb) or a TVSD folder")
    p.add_argument("--out", default="runs/evaluate", help="folder for report.json and grid.png")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to score")
    p.add_argument("--seed", type=int, default=None,
                   help="split seed (default: the one in the model's training config, else 0)")
    p.add_argument("--things-dir", default=None, help="TVSD only: your local THINGS image folder")
    p.add_argument("--monkey", choices=("N", "F"), default="N", help="TVSD only: which monkey")
    p.add_argument("--no-ridge", action="store_true", help="skip the ridge baselines")
    p.add_argument("--ridge-onnx", default=None,
                   help="also export the ridge baseline fitted on the model's own windows to this .onnx")
    p.add_argument("--ridge-windows", nargs="*", default=["spatiotemporal", "spatial"],
                   choices=("spatiotemporal", "spatial"),
                   help="window plans with a ridge baseline each (the model's own plan always has one)")
    p.add_argument("--oracle-sigma-px", type=float, default=None,
                   help="blur of the oracle (originals at the RF scale); default: the median V1 RF sigma of "
                        "the layout's mapped RFs, else of the simulator's ground truth")
    p.add_argument("--alexnet-weights", default=None,
                   help="torchvision alexnet state dict (.pth/.safetensors): adds AlexNet feature correlation "
                        "as in the paper (needs torch; nothing is downloaded)")
    p.add_argument("--vgg19-weights", "--vgg-weights", dest="vgg_weights", default=None,
                   help="torchvision vgg19 state dict (.pth/.safetensors): adds VGG19 feature correlation "
                        "(needs torch; nothing is downloaded)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--grid", type=int, default=10, help="images shown in grid.png")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads")
    p.add_argument("--cache-dir", default=None, help="cache the assembled window maps here")
    add_nwb_options(p)
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
    load = dict(things_dir=args.things_dir, monkey=args.monkey, cache_dir=args.cache_dir,
                progress=not args.no_progress, nwb=nwb_selection(args))
    data = load_decoding_data(args.data, **load, **opts)
    others = []
    if not args.no_ridge:  # the same recording and split through the other window plans
        for plan in dict.fromkeys(args.ridge_windows):
            if plan != data.plan.preset:
                others.append(load_decoding_data(args.data, **load, **{**opts, "windows": plan}))
    report = evaluate(data, model=args.model, checkpoint=args.checkpoint, split=args.split,
                      ridge=not args.no_ridge, seed=opts.get("seed", 0), threads=args.threads,
                      baseline_data=others, oracle_sigma_px=args.oracle_sigma_px, vgg_weights=args.vgg_weights,
                      alexnet_weights=args.alexnet_weights, n_boot=args.bootstrap)
    if args.ridge_onnx and not args.no_ridge:
        from pathlib import Path

        from ..onnx_io import save_model

        Path(args.ridge_onnx).parent.mkdir(parents=True, exist_ok=True)
        ridge = report["ridge_decoder"]
        save_model(ridge.to_onnx(data.contract(f"ridge-alpha{ridge.alpha:.3g}",
                                               {"kind": "ridge", "alpha": ridge.alpha, "source": data.source})),
                   args.ridge_onnx)
        report["baselines"][f"ridge_{data.plan.preset}"]["onnx"] = args.ridge_onnx
    paths = write_report(report, data, args.out, n_grid=args.grid)
    print(format_table(report))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
