"""Play recorded or simulated MUA as a live LSL stream (what `rtdecode playback` and
`rtdecode simulate --live` run). The files it plays are read by rtdecode.sessions."""

from .player import PlaybackStats, play

__all__ = ["PlaybackStats", "play"]
