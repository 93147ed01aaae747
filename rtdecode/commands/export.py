"""`rtdecode export CKPT --out M.onnx`: a self-contained, parity-checked rtdecode ONNX decoder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a training checkpoint to an rtdecode ONNX decoder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by `rtdecode train` (best.pt / last.pt)")
    p.add_argument("--out", required=True, help="the .onnx file to write (one file, no external data)")
    p.add_argument("--name", default=None, help="model name in the model id (homeomorphic-<preset> when omitted)%(default).0s")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--tol", type=float, default=1e-4, help="max |ONNX Runtime - torch| accepted in the parity check")
    p.add_argument("--fit-data", default=None,
                   help="session .h5 of the animal for the input-fit statistics (default: the checkpoint's "
                        "training session, when it is a session file here)%(default).0s")
    p.add_argument("--no-fit-stats", action="store_true", help="export without input-fit statistics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("export needs torch: pip install 'rtdecode[train]'") from None
    from rtdecode.training.export import export_checkpoint

    rep = export_checkpoint(args.checkpoint, args.out, name=args.name, opset=args.opset, tol=args.tol,
                            progress=not args.no_progress, fit_data=False if args.no_fit_stats else args.fit_data)
    worst = max(rep.max_abs_diff.values()) if rep.max_abs_diff else float("nan")
    print(f"wrote {rep.path} ({rep.size_bytes / 1e6:.2f} MB), model id {rep.model_id}; "
          f"parity ORT vs torch max abs diff {worst:.1e} over {', '.join(rep.max_abs_diff)}")
    return 0
