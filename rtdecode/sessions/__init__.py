"""Recorded MUA coming in: rtdecode's HDF5 session format, the Recording every reader yields
(session files, LabRecorder XDF, NWB, TVSD folders), and stimulus images as the decoder sees them.

Playback (rtdecode.playback) streams a Recording live; training reads the same files offline.
"""

from .nwb import nwb_recording, open_nwb
from .readers import open_recording, session_recording, xdf_recording
from .recording import Block, Recording
from .session_file import Session, SessionWriter, open_session

__all__ = ["Block", "Recording", "Session", "SessionWriter", "nwb_recording", "open_nwb", "open_recording",
           "open_session", "session_recording", "xdf_recording"]
