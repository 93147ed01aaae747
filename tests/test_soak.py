"""benchmarks/soak.py end to end, briefly: a few seconds of a live 1024-channel stream through
the service (bundled demo model) to a subscriber in another process; the report is complete
and no sample was lost. No wall-clock assertions: the box may be busy."""

from __future__ import annotations

import json

import pytest

from rtdecode.benchmarks.soak import DEMO_MODEL, main, run_soak

pytestmark = [pytest.mark.lsl, pytest.mark.slow]

LATENCY_KEYS = ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms")


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    assert DEMO_MODEL.is_file(), f"the bundled demo model is missing: {DEMO_MODEL}"
    out = tmp_path_factory.mktemp("soak")
    results = run_soak(duration_s=4.0, stride_ms=16.0, out_dir=out, tag="test", n_images=6, progress_s=0,
                       loop_s=1.5)
    return out, results


def test_soak_report_is_complete_and_nothing_dropped(soak):
    out, r = soak
    on_disk = json.loads((out / "soak-test.json").read_text())
    for key in ("frames", "samples", "skipped", "latency_ms", "stages_ms", "lag", "frame_interval_ms", "cpu",
                "load_average_1min", "machine", "config", "files"):
        assert key in on_disk, key
    s = on_disk["samples"]
    assert s["pushed"] > 1000 and s["received"] == s["pushed"] and s["dropped"] == 0
    assert s["gaps"] == 0 and s["out_of_order"] == 0 and s["duplicates"] == 0
    f = on_disk["frames"]
    assert f["received"] > 0 and f["received"] <= f["published"]
    assert on_disk["error"] is None
    for name in ("end_to_end", "infer", "e2e_minus_infer", "age_at_decode"):
        st = on_disk["latency_ms"][name]
        assert all(st.get(k) is not None for k in LATENCY_KEYS), (name, st)
        assert st["count"] == f["received"] - f["in_warmup"] > 0  # the first seconds are left out
        assert st["p50_ms"] <= st["p99_ms"] <= st["max_ms"]
    # e2e minus inference is the e2e without the inference stage, per frame
    lat = on_disk["latency_ms"]
    assert lat["e2e_minus_infer"]["mean_ms"] == pytest.approx(lat["end_to_end"]["mean_ms"] - lat["infer"]["mean_ms"],
                                                              rel=1e-6, abs=1e-6)
    assert on_disk["lag"]["age_at_decode_first_ms"]["count"] > 0
    assert on_disk["lag"]["age_at_decode_last_ms"]["count"] > 0
    assert on_disk["cpu"]["service_cores"] > 0
    for key in ("json", "md", "latency_png", "lag_png"):
        assert (out / on_disk["files"][key]).stat().st_size > 0, key
    md = (out / "soak-test.md").read_text()
    assert "dropped 0" in md and "end to end minus inference" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".soak-")]  # work files removed


def test_soak_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--stride-ms", "fast"])
    assert "--stride-ms" in capsys.readouterr().err
