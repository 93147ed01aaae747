"""The `rtdecode` command: one sub-command per module in rtdecode/commands/.

Each command module defines `register(subparsers)`, which adds its parser and sets
`func=run`; it imports nothing heavy at module level (torch, tensorrt, onnxruntime are imported
inside `run`), so `rtdecode --help` and serving never pull in torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import RtdecodeError

# Order shown in --help: the main job first.
COMMAND_MODULES = (
    "demo", "serve", "playback", "simulate", "view", "dashboard", "record", "frames",
    "train", "evaluate", "export", "build_engine", "inspect", "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtdecode",
        description="Real-time reconstruction of what a macaque sees from streamed MUA (LSL -> decoder -> ZeroMQ).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rtdecode {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rtdecode.commands.{name}")
        except ModuleNotFoundError as e:  # a sub-command whose module is not installed
            if e.name != f"rtdecode.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RtdecodeError as e:
        print(f"rtdecode {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
