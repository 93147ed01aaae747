"""benchmarks/quality_study.py end to end at toy size: every row it can run is trained, scored and reported."""

from __future__ import annotations

import json

import pytest

from rtdecode.benchmarks.quality_study import main


@pytest.mark.slow
def test_quality_study_smoke(tmp_path):
    out = tmp_path / "study"
    assert main(["--smoke", "--out", str(out), "--rows", "base,fixed-mapped,vgg"]) == 0
    study = json.loads((out / "quality.json").read_text())
    assert set(study["baselines"]) == {"floor", "ridge_spatiotemporal", "ridge_spatial", "oracle"}
    assert study["strongest_baseline"]["chosen_on"] == "val"
    assert "needs the VGG19 weights" in study["rows"]["vgg"]["skipped"]
    for name in ("base", "fixed-mapped"):
        row = study["rows"][name]
        lo, hi = row["test"]["ci"]["ssim"]
        assert lo <= row["test"]["ssim"] <= hi
        assert row["test"]["vs_strongest_baseline"]["baseline"] == study["strongest_baseline"]["name"]
        assert (out / f"grid-{name}.png").stat().st_size > 0
        assert row["rf"]["areas"]["V1"]["init_vs_true"] is not None
    assert study["best_row_on_val"] in ("base", "fixed-mapped")
    assert study["rows"]["base"]["config"]["rf_init"] == "centre"
    assert not (out / "session.h5").exists()  # sessions are large: deleted after use
    assert "| **base**" in (out / "quality.md").read_text()
    # re-rendering from the JSON alone gives the same table
    md = (out / "quality.md").read_text()
    assert main(["--report-only", "--out", str(out)]) == 0
    assert (out / "quality.md").read_text() == md
