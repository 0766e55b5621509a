"""scripts/bench_patching.py on a tiny checkpoint: the numbers it reports hang together
(its timings are for docs/INTERP.md, never asserted here)."""

import json

import pytest

from scripts import bench_patching
from tiny_models import tiny_hf_model


def test_bench_patching_on_a_tiny_hf_folder(tmp_path, capsys):
    hf = tiny_hf_model("llama32")
    hf.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    argv = ["--model", str(tmp_path / "model"), "--random-prompt", "12", "--rounds", "2",
            "--threads", "1", "--batch-size", "5", "--json", str(out)]
    assert bench_patching.main(argv) == 0
    r = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "2 layers x 12 positions = 24 patched runs" in text
    assert r["shape"] == [2, 12] and r["cells"] == 24 and r["batch_size"] == 5
    # 25 runs (24 cells + the corrupted run) in batches of 5, plus the clean run.
    assert r["forwards"] == {"batched": 6, "per_cell": 26}
    assert len(r["runs"]["batched"]) == len(r["runs"]["per_cell"]) == 2
    assert r["max_abs_diff"] <= 1e-5  # batching changes nothing but float32 rounding
    ratios = [p["wall_s"] / b["wall_s"] for b, p in zip(r["runs"]["batched"], r["runs"]["per_cell"])]
    assert r["speedup_wall"] == pytest.approx(ratios)
    assert r["cpu"]


def test_bench_patching_bad_arguments(tmp_path):
    with pytest.raises(SystemExit) as e:
        bench_patching.main(["--model", str(tmp_path / "missing")])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        bench_patching.main(["--rounds", "0"])
