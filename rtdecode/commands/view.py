"""`rtdecode view`: watch the reconstructed frames (window, or headless GIF/PNG/MP4), with the
stimulus beside them when the session is known and the latency of every frame."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from ..protocol import DEFAULT_ADDRESS

    p = sub.add_parser("view", help="show published frames (window or headless animation) with latency",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--address", default=DEFAULT_ADDRESS, help="ZeroMQ address the decoder publishes on")
    p.add_argument("--headless", action="store_true", help="no window: write an animation to --out")
    p.add_argument("--out", default="view-output", help="folder for the headless animation")
    p.add_argument("--format", choices=("gif", "png", "mp4"), default="gif", help="headless output format")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    stop.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--session", default=None,
                   help="session .h5 whose images to show beside the reconstruction")
    p.add_argument("--markers", default="MUA-markers",
                   help="LSL marker stream that says which image is on screen (used with --session "
                        "when frame headers carry no stimulus)")
    p.add_argument("--mode", choices=("frame", "phosphene"), default="frame",
                   help="phosphene: add a simulated prosthetic-vision tile")
    p.add_argument("--backend", choices=("builtin", "dynaphos", "pulse2percept"), default="builtin",
                   help="phosphene renderer (--mode phosphene): builtin (fast, live), dynaphos or "
                        "pulse2percept (optional extras, slow: offline comparisons); see "
                        "docs/display-and-recording.md")
    p.add_argument("--implant", choices=("grid", "cortivis", "orion", "icvp"), default="grid",
                   help="--backend pulse2percept: one electrode per phosphene (grid, 1024) or one of "
                        "pulse2percept's cortical devices")
    p.add_argument("--tile", type=int, default=192, help="size of each tile in pixels (frames are upscaled)")
    p.add_argument("--smooth", action="store_true", help="bilinear upscaling instead of nearest")
    p.add_argument("--fps", type=float, default=20.0, help="playback rate of the written animation")
    p.add_argument("--max-fps", type=float, default=0.0,
                   help="draw at most this many frames per second (0 = every frame)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..display.viewer import AnimationWriter, PanelComposer, PygameWindow, view

    if args.frames is not None and args.frames <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"--frames must be > 0, got {args.frames}")
    images = None
    stimulus_at = None
    feed = None
    if args.session:
        from ..sessions.session_file import open_session

        with open_session(args.session, need_images=True) as s:
            images = s.images
        if args.markers:
            from ..errors import ConfigError
            from ..sources.markers import LslMarkerFeed, StimulusTracker

            try:
                feed = LslMarkerFeed(args.markers, StimulusTracker(), timeout=3.0)
                stimulus_at = feed.at
            except ConfigError as e:
                log.warning("%s; the stimulus is shown only when frame headers name it", e)
    if args.mode != "phosphene" and (args.backend != "builtin" or args.implant != "grid"):
        from ..errors import ConfigError

        raise ConfigError("--backend and --implant choose the phosphene renderer: they need --mode phosphene")
    opts = {"backend": args.backend}
    if args.backend == "pulse2percept":
        opts["p2p_implant"] = args.implant
    elif args.implant != "grid":
        from ..errors import ConfigError

        raise ConfigError(f"--implant {args.implant} is for --backend pulse2percept, not {args.backend}")
    composer = PanelComposer(tile=args.tile, mode=args.mode, images=images, smooth=args.smooth,
                             phosphene_opts=opts if args.mode == "phosphene" else None)
    if args.headless:
        sink = AnimationWriter(args.out, args.format, fps=args.fps)
    else:
        sink = PygameWindow(composer.shape)
    print(f"viewing {args.address}" + (f" -> {args.out}/ ({args.format})" if args.headless else "")
          + "; Ctrl-C to stop")
    try:
        stats = view(args.address, sink, composer, duration=args.duration, frames=args.frames,
                     stimulus_at=stimulus_at, max_fps=args.max_fps)
    finally:
        if feed is not None:
            feed.close()
    print(stats.summary())
    return 0 if stats.frames else 1
