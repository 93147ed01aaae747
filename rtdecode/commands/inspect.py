"""`rtdecode inspect FILE`: print an ONNX decoder's (or a TensorRT engine's sidecar) metadata."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a model's or engine's metadata",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="an rtdecode .onnx decoder or a TensorRT .engine (with its .json sidecar)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.file.endswith((".engine", ".plan", ".json")):
        from ..engines.sidecar import describe_engine_file

        info = describe_engine_file(args.file)
    else:
        from ..contract import read_contract

        c = read_contract(args.file)
        info = {
            "model_id": c.model_id,
            "layout": {"name": c.layout.name, "channels": c.layout.n_channels, "electrodes": c.layout.n_electrodes,
                       "areas": list(c.layout.areas_present()),
                       "broken_arrays": list(c.layout.broken_arrays)},
            "windows": {"preset": c.plan.preset, "maps": [m.name for m in c.plan.maps],
                        "span_samples": c.plan.span, "sampling_rate_hz": c.plan.sampling_rate_hz},
            "input": {"name": "mua", "shape": ["batch", *c.input_shape]},
            "output": {"name": "frame", "shape": ["batch", *c.frame_shape]},
            "training_config": c.training_config,
        }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print(info)
    return 0


def _print(d: dict, indent: int = 0) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            print(" " * indent + f"{k}:")
            _print(v, indent + 2)
        else:
            print(" " * indent + f"{k}: {v}")
