"""`rtdecode simulate`: write a virtual-macaque session file, or stream it live over LSL."""

from __future__ import annotations

import argparse

STIMULUS_KINDS = ("dead-leaves", "naturalistic", "photos")  # rtdecode.sim.stimuli.STIMULUS_KINDS (checked there)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate MUA of a virtual macaque viewing images (session file or live LSL)",
        description="Simulate 1 kHz MUA of a virtual macaque (V1/V4/IT Utah arrays) viewing a sequence of "
                    "images: write an rtdecode session file (--out), or stream it live over LSL (--live).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="session file to write (.h5); required unless --live")
    p.add_argument("--n-images", type=int, default=None,
                   help="number of procedural images (--stimuli), 100 if not given; with --images: "
                        "show at most this many of the folder's images")
    p.add_argument("--stimuli", choices=STIMULUS_KINDS, default="dead-leaves",
                   help="procedural images: dead-leaves (flat discs, easy), naturalistic (1/f-textured scenes "
                        "with occluding shaded objects), photos (crops of scikit-image's sample photographs; "
                        "pip install rtdecode[eval]; the session records each crop's source photograph so "
                        "splits keep sources apart)")
    p.add_argument("--images", metavar="DIR", help="a folder of PNG/JPEG images to show instead")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (electrodes, noise, images)")
    p.add_argument("--image-seed", type=int, default=None,
                   help="seed of the procedural images (default: --seed); the same images under another "
                        "simulated monkey, or other images under the same one")
    p.add_argument("--image-size", type=int, default=64, help="image width = height in pixels")
    p.add_argument("--on-ms", type=int, default=200, help="image on time (ms)")
    p.add_argument("--off-ms", type=int, default=200, help="blank time between images (ms)")
    p.add_argument("--repeats", type=int, default=1, help="presentations per image (>1: seeded random order)")
    p.add_argument("--noise", type=float, default=1.0, help="noise scale (0 = noiseless)")
    p.add_argument("--layout", default="monkey-N", help="monkey-N, monkey-F or a layout .json file")
    p.add_argument("--known-rfs", action="store_true",
                   help="store the true RF centres (plus a little noise) in the session's layout")
    live = p.add_argument_group("live streaming (--live)")
    live.add_argument("--live", action="store_true", help="stream over LSL instead of writing a file")
    live.add_argument("--speed", type=float, default=1.0, help="playback speed (1 = real time)")
    live.add_argument("--stream-name", default="MUA", help="LSL stream name")
    live.add_argument("--marker-stream", default=None,
                      help="LSL marker stream name (default: the stream name + '-markers')")
    live.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    live.add_argument("--loop", action="store_true", help="start over after the last image")
    live.add_argument("--endless", action="store_true",
                      help="after the last image keep showing the images in fresh random orders")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..layout import load_layout
    from ..sim import VirtualMacaque

    if not args.live and not args.out:
        raise ConfigError("simulate needs --out FILE.h5 (or --live to stream over LSL)")
    layout = load_layout(args.layout)
    vm = VirtualMacaque(layout, image_size=args.image_size, seed=args.seed, noise=args.noise, stimuli=args.stimuli)
    images = args.images
    if args.live:
        from ..playback import play

        rec = vm.recording(images, args.n_images, endless=args.endless, on_ms=args.on_ms,
                           off_ms=args.off_ms, repeats=args.repeats, image_seed=args.image_seed)
        markers = args.marker_stream or f"{args.stream_name}-markers"
        stats = play(rec, stream_name=args.stream_name, stream_type="MUA", marker_stream=markers,
                     speed=args.speed, loop=args.loop, duration=args.duration)
        print(f"streamed virtual macaque (seed {args.seed}) as LSL stream {args.stream_name!r}: "
              f"{stats.samples} samples in {stats.elapsed_s:.1f} s, {stats.markers} markers, "
              f"{stats.late_pushes} late pushes, stopped by {stats.stopped_by}")
        return 0
    info = vm.simulate_session(args.out, images, args.n_images, args.on_ms, args.off_ms, repeats=args.repeats,
                               known_rfs=args.known_rfs, image_seed=args.image_seed, progress=True)
    print(f"wrote {info['path']}: {info['n_trials']} trials of {info['n_images']} images, "
          f"{info['n_samples'] / 1000.0:.1f} s of MUA x {info['n_channels']} channels ({info['layout']}), "
          f"seed {info['seed']}, {args.stimuli if images is None else 'given'} images"
          f"{', known RFs' if args.known_rfs else ''}, in {info['seconds']:.1f} s")
    return 0
