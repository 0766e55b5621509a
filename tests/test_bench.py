"""llama-bench on a tiny checkpoint: the numbers it reports hang together."""

import json

import pytest

from llama.speed import cpu_model
from scripts import bench
from tiny_models import tiny_hf_model


def test_bench_side_by_side_on_a_tiny_hf_folder(tmp_path, capsys):
    hf = tiny_hf_model("llama32")
    hf.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    argv = ["--model", str(tmp_path / "model"), "--repeats", "2", "--json", str(out), "--compare-kernels", "--no-stored"]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "ours / transformers" in table and "roofline" in table

    for name in ("ours", "ours_plain", "transformers"):
        x = r[name]
        if name != "ours_plain":  # ours_plain is our loaded model with its kernels switched
            assert x["load"]["load_s"] > 0 and x["load"]["peak_rss_bytes"] > 0
            assert len(x["load"]["load_s_samples"]) == 2
        assert len(x["prefill_samples"]) == len(x["decode_samples"]) == 2
        assert x["prefill_tok_s"] > 0 and x["decode_tok_s"] > 0
    # The ratios and the roofline are what they say they are.
    ratios = r["ratios"]["ours / transformers"]
    assert ratios["decode"] == pytest.approx(r["ours"]["decode_tok_s"] / r["transformers"]["decode_tok_s"])
    assert ratios["prefill"] == pytest.approx(r["ours"]["prefill_tok_s"] / r["transformers"]["prefill_tok_s"])
    assert r["cpu"] == cpu_model() and r["cpu"] in table
    assert r["kernels"] and all(k["kernel"] in ("linear", "bmm2", "bmm4", "mv", "onednn") for k in r["kernels"])
    n_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())  # tied: counted once
    assert r["weight_bytes_per_token"] == n_bytes
    assert r["read_bandwidth_gb_s"] == max(r["read_bandwidth_samples_gb_s"])
    assert r["roofline_decode_tok_s"] == pytest.approx(r["read_bandwidth_gb_s"] * 1e9 / n_bytes)
    assert r["ours"]["share_of_roofline"] == pytest.approx(r["ours"]["decode_tok_s"] / r["roofline_decode_tok_s"])


def test_bench_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", str(tmp_path / "missing")])
    assert e.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", str(tmp_path / "junk"), "--no-transformers", "--repeats", "1"])
    assert e.value.code == 2
    assert "could not benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])


def test_bench_synthetic_model_with_weights_as_stored(tmp_path, capsys):
    """The Llama-2-7B option's code path, on the small preset: written, measured, deleted."""
    out = tmp_path / "bench.json"
    argv = ["--synthetic", "small", "--dir", str(tmp_path), "--repeats", "1", "--dtype", "bfloat16",
            "--prefill-tokens", "16", "--decode-tokens", "4", "--sequential", "--no-transformers", "--json", str(out)]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert r["synthetic"] == {"preset": "small", "format": "q4_0", "layers": None}
    assert not list(tmp_path.glob("llama_bench_*"))  # the model file is gone
    assert r["cpu"] in table and "stored / ours" in table
    for name in ("ours", "stored"):
        assert r[name]["decode_tok_s"] > 0 and r[name]["prefill_tok_s"] > 0
        assert len(r[name]["decode_samples"]) == 1
    # Weights as stored read 4-bit blocks (plus float32 norms and bfloat16 scales): far fewer
    # bytes per token than the bfloat16 model. (The embedding, one row per token, is not counted.)
    assert r["stored"]["weight_bytes_per_token"] < 0.4 * r["ours"]["weight_bytes_per_token"]
    assert r["ratios"]["stored / ours"]["decode"] == pytest.approx(r["stored"]["decode_tok_s"] / r["ours"]["decode_tok_s"])
    # llama.cpp is optional: measured when llama-cpp-python is installed, else skipped with
    # the reason, never a failure.
    assert ("decode_tok_s" in r.get("llama.cpp", {})) or r["skipped"]["llama.cpp"]
    assert "transformers" not in r
