"""What the peer pipelines (ezmsg, MNE-LSL) share with rtdecode so that they decode the same frames.

The frameworks do acquisition, buffering, scheduling and transport their own way; the decoding
itself must be the same for the comparison to mean anything: the same window assembly and
normalisation (the model's contract), an ONNX Runtime session with the options rtdecode's
OrtEngine uses (intra-op threads, 1 inter-op thread, sequential, graph opt "all", the same
spinning rule), called plainly with `session.run` as ONNX Runtime's documentation shows, and
the same wire format (rtdecode.protocol: [topic, JSON header, payload], the header carrying the
stage stamps, so the rig's Subscriber measures every pipeline alike).

Stage stamps a peer sets: pulled (its code first saw the window's newest sample), started,
assembled, normalised, inferred (ONNX Runtime call alone), published (just before the send).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

PEERS = ("ezmsg", "mne-lsl")


def ort_session(model_path: str | Path, threads: int | None = None):
    """An onnxruntime InferenceSession with rtdecode's OrtEngine options (rtdecode.engines.ort)."""
    import onnxruntime as ort

    from rtdecode.engines.ort import default_threads

    n = default_threads() if threads is None else int(threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = n > 1 and (os.cpu_count() or 1) > 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])


class PeerDecoder:
    """Window -> frame for a peer pipeline: the contract's assembler and normaliser, an ORT
    session (`ort_session`), protocol.encode_frame and the protocol's JSON header.

    `stride` (samples) is the decoding cadence: a peer decodes its newest window once `stride`
    new samples arrived since the last one, as rtdecode decodes the newest due window.
    """

    def __init__(self, model_path: str | Path, stride_ms: float, threads: int | None = None):
        from rtdecode.contract import INPUT_NAME, read_contract
        from rtdecode.sinks.publisher import HeaderEncoder

        c = read_contract(model_path)
        self.contract = c
        self.fs = c.plan.sampling_rate_hz
        self.span = c.plan.span
        self.n_channels = c.layout.n_channels
        self.stride = max(1, int(round(stride_ms * self.fs / 1000.0)))
        self.session = ort_session(model_path, threads)
        self.input_name = INPUT_NAME
        self.assembler = c.assembler()
        self.normaliser = c.normaliser()
        self.x = np.zeros((1, *c.input_shape), dtype=np.float32)
        self.header = HeaderEncoder(c.model_id, (c.image_height, c.image_width, 3), "uint8")
        self.seq = 0
        for _ in range(3):  # warm-up, as rtdecode does
            self.session.run(None, {self.input_name: self.x})

    def decode(self, block: np.ndarray, ref_ts: float, newest_ts: float, pulled: float) -> tuple[bytes, np.ndarray]:
        """block [span, C] (reference sample first) -> (header bytes, payload [H, W, 3] uint8)."""
        from rtdecode.protocol import encode_frame

        started = time.monotonic()
        self.assembler.assemble(block, out=self.x[0])
        assembled = time.monotonic()
        self.normaliser(self.x[0])
        normalised = time.monotonic()
        y = self.session.run(None, {self.input_name: self.x})[0]
        inferred = time.monotonic()
        payload = encode_frame(y[0], "uint8")
        published = time.monotonic()
        header = self.header.encode(self.seq, ref_ts, newest_ts,
                                    (pulled, started, assembled, normalised, inferred, published))
        self.seq += 1
        return header, payload


def peer_available(name: str) -> str | None:
    """None when the peer's packages are importable here, else why not (for skips and the report)."""
    import importlib.util

    need = {"ezmsg": ("ezmsg.core", "ezmsg.lsl", "ezmsg.zmq"), "mne-lsl": ("mne_lsl",)}[name]
    for mod in need:
        try:
            if importlib.util.find_spec(mod) is None:
                raise ImportError
        except (ImportError, ValueError):
            return (f"{name} is not installed ({mod} missing; optional: "
                    f"pip install 'rtdecode[peers]' or pip install ezmsg ezmsg-lsl ezmsg-zmq mne-lsl)")
    return None


def machine_scope_lsl_env() -> None:
    """mne-lsl loads its own liblsl, which reads LSLAPICFG: point it at machine scope if unset."""
    if os.environ.get("LSLAPICFG"):
        return
    import tempfile

    from rtdecode.lslconfig import MACHINE_SCOPE_CFG

    fd, path = tempfile.mkstemp(prefix="rtdecode-lsl-", suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(MACHINE_SCOPE_CFG)
    os.environ["LSLAPICFG"] = path
