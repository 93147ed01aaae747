"""`rtdecode bench`: latency benchmarks (inference; end to end over LSL + ZeroMQ beside ezmsg, MNE-LSL and a
first-try pipeline, at strides 1, 5 and 16 ms, with the transport floor).

Writes bench.json (with the machine's facts), bench.md (tables) and PNG latency
histograms/CDFs into --out. The code lives in benchmarks/ (imported only when this runs).
"""

from __future__ import annotations

import argparse

DEFAULT_PARTS = "inference,e2e,ezmsg,mne-lsl,first-try,floor"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency benchmarks: inference, end to end beside ezmsg / MNE-LSL / first-try",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--part", default=DEFAULT_PARTS,
                   help="comma-separated parts: inference, e2e (rtdecode), ezmsg, mne-lsl (the peers: skipped "
                        "with a reason where not installed, see the 'peers' extra), first-try, floor (LSL alone "
                        "and ZeroMQ alone)")
    p.add_argument("--quick", action="store_true", help="3 s per run instead of 20 s (about 3 minutes on 2 cores)")
    p.add_argument("--out", default="bench-results", help="output folder for bench.json, bench.md and PNGs")
    p.add_argument("--threads", type=int, default=None,
                   help="engine intra-op threads for the e2e service (default: the engine's own choice)")
    p.add_argument("--variant", action="append", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="also run rtdecode with these serve settings right after each default run, for an A/B "
                        "under the same load (e.g. --variant inlet=loop --variant pin_cpu=1); repeatable")
    p.add_argument("--note", default=None, help="free text stored in the report (e.g. 'machine busy')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtdecode.benchmarks import run_suite

    from ..errors import ConfigError
    from ..lslconfig import configure_lsl

    parts = tuple(p.strip() for p in args.part.split(",") if p.strip())
    if not parts:
        raise ConfigError("--part is empty; expected some of inference, e2e, ezmsg, mne-lsl, first-try, floor")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    variants = tuple(parse_variant(v) for v in (args.variant or ()))
    configure_lsl()  # machine scope unless LSLAPICFG says otherwise; children inherit the env
    results = run_suite(parts, quick=args.quick, out_dir=args.out, note=args.note, threads=args.threads,
                        progress=lambda msg: print(msg, flush=True), variants=variants)
    print(f"wrote {results['files']['json']}, {results['files']['markdown']} and "
          f"{len(results['files']['plots'])} plot(s)")
    for t in results.get("targets", []):
        print("target:", t)
    return 0


def parse_variant(text: str) -> dict:
    """'inlet=loop,pin_cpu=1,reconnect=false' -> {'inlet': 'loop', 'pin_cpu': 1, 'reconnect': False},
    checked against ServeConfig."""
    from ..config import ServeConfig
    from ..errors import ConfigError

    out: dict = {}
    for item in (t.strip() for t in text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise ConfigError(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE], e.g. inlet=loop")
        if key not in ServeConfig.field_names():
            raise ConfigError(f"--variant {text!r}: {key!r} is not a serve setting (see rtdecode serve --help)")
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    ServeConfig(**out)  # the values are valid serve settings
    return out
