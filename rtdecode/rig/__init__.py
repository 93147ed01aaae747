"""The loopback rig: the processes around a DecoderService on one machine, as on a real rig.

- `Pusher` (pusher.py): a child pushing given samples (or amplifier-like noise) to a real LSL outlet;
- `Player` (player.py): a child playing a session or a looped virtual-macaque recording with
  rtdecode.playback.play;
- `ChaosOutlet` (chaos.py): a messy outlet (odd chunks, NaN bursts, bad timestamps, restarts with
  the same source_id), channel 0 holding each sample's serial number;
- `Subscriber` (subscriber.py): a child receiving the frames, read back as a `FrameLog`;
- `ServiceThread` (service_thread.py): the DecoderService in a thread of this process;
- `CpuMeter` (cpu.py): CPU use of these processes; and in child.py the `ChildProcess` they share
  (start and stop with deadlines, results as JSON and .npy files), `wait_until`, `unique`,
  `free_tcp_address`.

Used by `rtdecode demo`, the benchmarks, the soak and the tests. LSL discovery must be
machine-scope (LSLAPICFG, see rtdecode.lslconfig); children inherit the environment.
"""

from __future__ import annotations

from .chaos import ChaosOutlet
from .child import ChildLink, ChildProcess, free_tcp_address, unique, wait_until
from .cpu import CpuMeter
from .player import Player, looped_sim_recording
from .pusher import Pusher
from .service_thread import ServiceThread
from .subscriber import COLUMNS, FrameLog, FrameTable, Subscriber

__all__ = ["COLUMNS", "ChaosOutlet", "ChildLink", "ChildProcess", "CpuMeter", "FrameLog", "FrameTable", "Player", "Pusher",
           "ServiceThread", "Subscriber", "free_tcp_address", "looped_sim_recording", "unique", "wait_until"]
