"""`rtdecode fit-stats M.onnx --data SESSION.h5`: add input-fit statistics to a decoder, no retraining.

Computes rtdecode.fit statistics (per-area low-rank model of the normalised sliding windows,
held-out score range) from a recording of the animal the model was trained on, and writes
them into the model's metadata (`rtdecode.input_fit`); weights and model id are unchanged.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-stats", help="add input-fit statistics to a decoder from a session of its animal",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="an rtdecode .onnx decoder")
    p.add_argument("--data", required=True, help="an rtdecode session .h5 of the animal the model was trained on")
    p.add_argument("--out", default=None, help="write the updated model here (default: update MODEL in place)")
    p.add_argument("--k", type=int, default=16, help="principal components per area")
    p.add_argument("--stride-ms", type=float, default=50.0, help="one window scored per this much stream")
    p.add_argument("--block", type=int, default=40, help="windows per scored block")
    p.add_argument("--heldout", type=float, default=0.25, help="fraction of 20-s segments held out for the range")
    p.add_argument("--margin", type=float, default=1.0, help="range widening, x the held-out spread on each side")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..contract import read_contract
    from ..errors import ConfigError
    from ..fit import compute_fit_stats
    from ..layout import check_channels
    from ..onnx_io import set_input_fit
    from ..sessions.session_file import open_session

    contract = read_contract(args.model)
    session = open_session(args.data, need_images=False)
    try:
        check_channels(contract.layout, session.n_channels, f"{args.data}:/mua")
        if abs(session.sampling_rate_hz - contract.plan.sampling_rate_hz) > 1e-6:
            raise ConfigError(f"{args.data} is sampled at {session.sampling_rate_hz:g} Hz; the model expects "
                              f"{contract.plan.sampling_rate_hz:g} Hz")
        stats = compute_fit_stats(session.mua, contract, k=args.k, stride_ms=args.stride_ms, block=args.block,
                                  heldout_fraction=args.heldout, margin=args.margin,
                                  info={"source": Path(args.data).name, "how": "rtdecode fit-stats"})
    finally:
        session.close()
    out = set_input_fit(args.model, stats, args.out)
    read_contract(out)
    print(f"wrote input-fit statistics into {out} (model id {contract.model_id} unchanged); accepted block scores: "
          + ", ".join(f"{a.name} [{a.lo:.2f}, {a.hi:.2f}]" for a in stats.areas))
    return 0
