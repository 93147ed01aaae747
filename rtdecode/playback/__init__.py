"""Play recorded or simulated MUA as a live LSL stream (what `rtdecode playback` and
`rtdecode simulate --live` run), and read the files it plays."""

from .player import PlaybackStats, play
from .readers import open_recording, session_recording, xdf_recording

__all__ = ["PlaybackStats", "play", "open_recording", "session_recording", "xdf_recording"]
