"""Telemetry's event records: a long run of bad ranges never evicts the outlet's losses and reconnects."""

from __future__ import annotations

from rtdecode.telemetry import Telemetry, summary_text


def test_many_bad_ranges_do_not_evict_lost_and_reconnected():
    t = Telemetry(max_events=200)
    t.event("lost", sample=10)
    t.event("reconnected", sample=10, after_s=0.4)
    for i in range(1000):
        t.event("nan_samples", first_sample=i * 5, stop_sample=i * 5 + 2)
    snap = t.snapshot()
    assert [e["kind"] for e in snap["incidents"]] == ["lost", "reconnected"]
    assert len(snap["events"]) == 200 and snap["events"][-1]["first_sample"] == 999 * 5
    assert snap["event_counts"] == {"lost": 1, "reconnected": 1, "nan_samples": 1000}
    assert "nan_samples 1000" in summary_text(snap)


def test_a_run_ending_while_lost_says_so():
    t = Telemetry()
    assert "STREAM LOST" not in summary_text(t.snapshot())
    t.lost = True
    snap = t.snapshot()
    assert snap["stream"]["lost"] is True
    assert "STREAM LOST" in summary_text(snap)
