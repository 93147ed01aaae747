"""The loopback rig's own pieces: the frame table a subscriber child fills and hands back, the
benchmarks' statistics of it, and a child that fails before it is ready."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rtdecode.rig import COLUMNS, ChildLink, FrameLog, FrameTable, Player


def _table(tmp_path, n: int, keep_images: bool = False, skip_seq: int | None = None) -> FrameLog:
    table = FrameTable(keep_images)
    for i in range(n):
        seq = i + (1 if skip_seq is not None and i >= skip_seq else 0)
        newest = 100.0 + i * 0.016
        stages = {"pulled": newest + 0.001, "started": newest + 0.0012, "assembled": newest + 0.0013,
                  "normalised": newest + 0.0014, "inferred": newest + 0.0034, "published": newest + 0.0036}
        table.append(newest + 0.005, newest, newest - 0.196, seq, 0, stages,
                     np.full((4, 4, 3), i % 256, np.uint8) if keep_images else None, flagged=(i == 3))
    table.save(ChildLink(str(tmp_path), threading.Event(), threading.Event()), cpu_s=0.25, discarded=2)
    return FrameLog.load(tmp_path)


def test_frame_table_grows_in_blocks_and_round_trips_through_npy_and_json(tmp_path):
    n = 8192 + 10  # more than one block
    log = _table(tmp_path, n, keep_images=True)
    assert len(log) == n and log.columns == COLUMNS and log.flagged == 1 and log.cpu_s == 0.25 and log.discarded == 2
    assert np.allclose(log.col("received") - log.col("newest_ts"), 0.005)
    assert log.col("seq")[-1] == n - 1 and log.images.shape == (n, 4, 4, 3) and log.images[8193, 0, 0, 0] == 8193 % 256
    later = log.since(1.0)  # frames 16 ms apart: the first 63 are within the first second
    assert len(later) == n - 63 and later.images.shape[0] == len(later)


def test_frame_statistics_of_a_subscriber_log(tmp_path):
    from rtdecode.benchmarks.frame_stats import analyse_frames, stage_breakdown

    log = _table(tmp_path, 200, skip_seq=50)
    stats, lat = analyse_frames(log, 16.0, skip_first_s=0.5)
    assert stats["frames_received"] == 200 and stats["frames_analysed"] == 200 - 32
    assert stats["latency_ms"]["count"] == lat.size == 168 and stats["latency_ms"]["p50_ms"] == pytest.approx(5.0)
    assert stats["frame_interval_ms"]["p50_ms"] == pytest.approx(16.0) and stats["frame_interval_ms"]["nominal_ms"] == 16
    assert stats["frames_lost_in_transport"] == 1  # seq 50 never arrived
    assert stats["frames_passed_over"] == 2  # as the subscriber counted them
    stages = stage_breakdown(log.since(0.5))
    assert stages["infer"]["p50_ms"] == pytest.approx(2.0) and stages["zmq_out"]["p50_ms"] == pytest.approx(1.4)
    assert stages["e2e_minus_infer"]["p50_ms"] == pytest.approx(3.0)  # 5 ms end to end, 2 ms of it inference
    assert analyse_frames(None, 16.0)[0]["latency_ms"] == {"count": 0}


@pytest.mark.timeout(60)
def test_a_child_that_fails_before_it_is_ready_raises_its_error(tmp_path):
    player = Player(stream="never-played", session=tmp_path / "missing.h5", start_timeout=30)
    with pytest.raises(RuntimeError, match="player child exited .* before it was ready: .*missing.h5"):
        player.start()
    assert player.stop()["error"]  # stopping a dead child is harmless and keeps its last state


def test_shown_age_is_the_time_average_of_the_shown_frames_age(tmp_path):
    from rtdecode.benchmarks.frame_stats import shown_age_ms

    table = FrameTable()
    for k in range(101):  # a frame every 10 ms, each 5 ms old on arrival: the shown age runs 5 -> 15 ms
        table.append(1.0 + 0.01 * k, 1.0 + 0.01 * k - 0.005, 0.0, k)
    link = ChildLink(str(tmp_path), threading.Event(), threading.Event())
    table.save(link)
    log = FrameLog.load(tmp_path)
    assert shown_age_ms(log, skip_first_s=0.0) == pytest.approx(10.0)
    # fresher frames half as often: 1 ms old on arrival, every 20 ms -> 1 + 20 / 2 = 11 ms
    table = FrameTable()
    for k in range(51):
        table.append(1.0 + 0.02 * k, 1.0 + 0.02 * k - 0.001, 0.0, k)
    table.save(link)
    assert shown_age_ms(FrameLog.load(tmp_path), skip_first_s=0.0) == pytest.approx(11.0)
