"""The benchmark's peer pipelines (ezmsg, MNE-LSL) at tiny size: frames arrive over real LSL and
ZeroMQ, and each equals rtdecode's frame for the same window. Skips with the reason where a peer
is not installed (they are the optional `peers` extra). No speed is asserted."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.benchmarks.peer_decode import PEERS, peer_available
from rtdecode.benchmarks.peers import run_peer
from rtdecode.engines import create_engine
from rtdecode.protocol import encode_frame
from rtdecode.rig import Pusher
from rtdecode.testing import make_model

pytestmark = [pytest.mark.lsl, pytest.mark.slow, pytest.mark.timeout(180)]

FS = 1000.0
C = 64


@pytest.mark.parametrize("kind", PEERS)
def test_peer_pipeline_frames_equal_rtdecodes_frame_for_the_same_window(tmp_path, kind):
    why = peer_available(kind)
    if why:
        pytest.skip(why)
    model, contract = make_model(tmp_path / "m.onnx", C, seed=5)
    row, lat, extra = run_peer(kind, model, stride_ms=16, duration_s=1.5, n_channels=C, keep_images=True,
                               progress=lambda _msg: None)
    assert not row.get("skipped"), row["skipped"]  # installed, so it must run
    log, base = extra["frames"], extra["base"]
    assert log is not None and len(log) >= 30, f"{kind}: {row.get('frames_received')} frames"
    assert log.images is not None and log.images.shape[1:] == (8, 8, 3) and log.images.dtype == np.uint8
    seq = log.col("seq")
    assert np.array_equal(seq, np.arange(seq[0], seq[0] + len(seq)))  # nothing lost on loopback
    # the header carries that frame's own inference time, as rtdecode's does
    assert np.all(log.col("inferred") > log.col("normalised"))
    block = Pusher.noise_block(n_channels=C, fs=FS)
    span = contract.plan.span
    engine = create_engine("onnxruntime", str(model), contract)
    asm, norm = contract.assembler(), contract.normaliser()
    x = np.zeros((1, *contract.input_shape), dtype=np.float32)
    refs = []
    for i in range(len(log)):
        ref_time, newest_ts = log.col("ref_time")[i], log.col("newest_ts")[i]
        k = int(round((ref_time - base) * FS))
        assert abs(base + k / FS - ref_time) < 2e-4  # a sample's own LSL timestamp
        assert abs(newest_ts - ref_time - (span - 1) / FS) < 2e-4  # the window's newest sample
        asm.assemble(block[(k + np.arange(span)) % len(block)], out=x[0])
        norm(x[0])
        want = encode_frame(engine.infer(x)[0], "uint8")
        np.testing.assert_array_equal(log.images[i], want, err_msg=f"{kind} frame {i} (window at sample {k})")
        refs.append(k)
    strides = np.diff(refs)
    assert strides.min() >= 16 and np.median(strides) == 16  # the newest window, one stride after the last
    engine.close()
