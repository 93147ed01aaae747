"""`rtdecode build-engine M.onnx`: compile the decoder into a TensorRT engine for this GPU."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine (+ sidecar) from an ONNX decoder",
                       description="Build M.engine and its M.engine.json sidecar for the GPU and TensorRT "
                                   "version of this machine. Needs TensorRT >= 10, cuda-python and an NVIDIA GPU.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="rtdecode ONNX decoder (M.onnx)")
    p.add_argument("--out", default=None, help="engine file (default: M.engine beside the model)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 10)")
    p.add_argument("--int8", action="store_true", help="allow INT8 kernels, calibrated on --calibration (TensorRT 10)")
    p.add_argument("--calibration", default=None, metavar="SESSION",
                   help="recorded session (.h5) whose windows calibrate INT8")
    p.add_argument("--calibration-samples", type=int, default=512, help="decoder inputs used for INT8 calibration")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch the engine accepts (optimised for 1)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace memory limit")
    p.add_argument("--timing-cache", default=None, metavar="FILE",
                   help="TensorRT timing cache to load (if present) and save (speeds up rebuilds)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtdecode.deploy.build_engine import BuildOptions, build_engine

    opts = BuildOptions(onnx_path=args.model, out=args.out, fp16=args.fp16, int8=args.int8,
                        calibration=args.calibration, calibration_samples=args.calibration_samples,
                        max_batch=args.max_batch, workspace_mb=args.workspace,
                        timing_cache=args.timing_cache, device_id=args.device)
    engine, sidecar = build_engine(opts)
    print(f"engine:  {engine}")
    print(f"sidecar: {sidecar}")
    return 0
