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

        info = read_contract(args.file).describe()
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
