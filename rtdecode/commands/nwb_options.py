"""The options that pick objects inside an NWB file, shared by playback, train and evaluate."""

from __future__ import annotations

import argparse


def add_nwb_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nwb-series", default=None,
                   help="NWB: the MUA series by name or path, e.g. MUA or processing/ecephys/MUA "
                        "(default: the only 2-D series, else the one named MUA)%(default).0s")
    p.add_argument("--nwb-intervals", default=None,
                   help="NWB: the table of stimulus onsets, e.g. trials or epochs (default: the only "
                        "TimeIntervals table with an image column, else trials)%(default).0s")
    p.add_argument("--nwb-images", default=None,
                   help="NWB: the stimulus template holding the images (default: the only one)%(default).0s")


def nwb_selection(args: argparse.Namespace) -> dict[str, str | None]:
    """{"series", "intervals", "images"} as rtdecode.sessions.nwb.open_nwb takes them."""
    return {"series": args.nwb_series, "intervals": args.nwb_intervals, "images": args.nwb_images}
