"""benchmarks/speed.py, longform.py and serve.py in their tiny modes, so the scripts cannot rot.

Each script runs end to end on tiny random models (conf/clsr_tiny.yaml, a 1-layer Whisper) and
a few seconds of synthetic audio; the checks are on the structure and consistency of the
results, not on speed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clsr_testing import CONTEXTS, QUESTIONS, REPO, load_benchmark, tone_speech


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory) -> Path:
    """Five synthetic contexts (tone 'speech') with a question each, as the recipe's jsonl has them."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("bench_qa")
    rows = []
    for i, (ctx, q) in enumerate(zip(CONTEXTS[:5], QUESTIONS[:5])):
        wav = root / f"ctx{i}.wav"
        sf.write(wav, tone_speech(" ".join([ctx] * 3), seed=i), 16000)
        rows.append({"source": str(wav), "question": q, "context_id": f"c{i}", "target": ctx})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- pure helpers


def test_hit_scoring_and_chance_level():
    lf = load_benchmark("longform")
    segs = [{"start": 0.0, "end": 4.0}, {"start": 4.0, "end": 8.0}, {"start": 8.0, "end": 12.0}]
    targets = [{"start": 5.0, "end": 9.0}, {"start": 0.5, "end": 1.0}]
    ranked = [[1, 0, 2], [2, 1, 0]]
    assert lf.hits_at(ranked, segs, targets, ks=(1, 2, 3)) == {"hit@1": 0.5, "hit@2": 0.5, "hit@3": 1.0}
    assert lf.chance_hit1(segs, targets) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert not lf.overlaps({"start": 4.0, "end": 8.0}, {"start": 8.0, "end": 9.0})  # touching is not overlapping
    assert lf.top_k_rows(np.array([[0.1, 0.9, 0.5]]), 5) == [[1, 2, 0]]


def test_reference_text_has_exactly_the_requested_pieces(tiny_te_dir):
    bc = load_benchmark("bench_common")
    from funasr_clsr.tokenizer import WordPieceTokenizer

    tok = WordPieceTokenizer(tiny_te_dir / "vocab.txt")
    for n in (1, 7, 40):
        assert len(tok.text2tokens(bc.text_with_pieces(tok, "the king of the city", n))) == n


def test_bad_inputs_are_one_line_errors(tmp_path):
    lf = load_benchmark("longform")
    sp = load_benchmark("speed")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"source": "x.wav", "context_id": "c0"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: no 'question' field"):
        lf.context_rows(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        lf.context_rows(tmp_path / "missing.jsonl")
    with pytest.raises(SystemExit):
        sp.parse_args(["--systems", "clsr,nope"])
    with pytest.raises(SystemExit):
        lf.parse_args(["--minutes", "ten"])


# --------------------------------------------------------------------------- scripts end to end


def _same_ratio(value: float, slow: dict, fast: dict) -> bool:
    """``value`` (from unrounded medians) against the ratio of the saved medians, which are rounded to 4
    decimals: on a fast CPU a tiny model's few-ms medians move by more than 1 % in that rounding."""
    ratio = slow["median_s"] / fast["median_s"]
    return value == pytest.approx(ratio, rel=1e-2 + 0.5e-4 / slow["median_s"] + 0.5e-4 / fast["median_s"], abs=1e-3)


def test_speed_tiny_end_to_end(tmp_path, monkeypatch):
    sp = load_benchmark("speed")
    out = tmp_path / "speed.json"
    md = tmp_path / "speed.md"
    cache = tmp_path / "encoder_cache"
    monkeypatch.setenv("FUNASR_CLSR_ENCODER_CACHE", str(cache))  # wclsr must run its encoder regardless
    report = sp.main(["--tiny", "--threads", "1", "--repeats", "1", "--warmup", "0", "--json", str(out),
                      "--markdown", str(md)])
    saved = json.loads(out.read_text())
    assert saved["targets"] == json.loads(json.dumps(report["targets"]))
    timings = saved["timings"]
    assert set(timings) == {f"{s}@b{b}" for s in sp.ALL_SYSTEMS for b in (1, 2)}
    for key, t in timings.items():
        # both are rounded (4 and 5 decimals): on a fast CPU a tiny model's median_s's rounding alone is > 1 %
        assert t["median_s"] > 0 and t["rtf"] == pytest.approx(t["median_s"] / t["audio_s"], rel=1e-2,
                                                               abs=0.5e-4 / t["audio_s"] + 0.5e-5), key
        if t["system"] in sp.CASCADES:
            assert t["forced_length_ok"], (key, t["decoded_tokens"])  # every cascade decoded exactly --tokens
    # the CIF forcing reaches the decoder: it processes exactly --tokens tokens per utterance
    assert saved["models"]["clsr"]["forced_tokens_seen_by_decoder"] == 8
    assert saved["models"]["wclsr"]["forced_tokens_seen_by_decoder"] == 8
    assert saved["models"]["wclsr"]["encoder_cache"] == "off" and not cache.exists()
    assert saved["models"]["wclsr"]["whisper"]["encoder_layers"] == sp.WHISPER_TINY_TEST["encoder_layers"]
    for b in (1, 2):  # Whisper-base CLSR against the Whisper-base cascade, both precisions, this run's medians
        for fast, slow in (("wclsr", "fw_base_fp32"), ("wclsr_int8", "fw_base_int8")):
            name = f"speedup_{fast}_vs_{slow}_b{b}"
            tgt = saved["targets"][name]
            assert _same_ratio(tgt["value"], timings[f"{slow}@b{b}"], timings[f"{fast}@b{b}"]) and tgt["target"] == 2.0, name
    assert saved["targets"]["rtf_wclsr_int8"]["target"] == 0.03 and saved["targets"]["rtf_wclsr_fp32"]["target"] == 0.05
    for key in ("fw_base_fp32@b1", "fw_base_int8@b2"):
        fw = saved["profile_fw"][key]
        assert fw["encoder"] > 0 and fw["features"] > 0 and fw["text_encoder"] > 0, key
        assert sum(fw[k] for k in ("features", "encoder", "text_encoder", "decoding_and_other")) == pytest.approx(
            fw["total"], abs=2e-3)
    assert set(saved["profile_clsr"]) >= {"wclsr@b1", "wclsr_int8@b2"}
    # ratios are computed from this run's medians
    sv = saved["targets"]["speedup_vs_whisper_hf_b1_fp32"]
    assert _same_ratio(sv["value"], timings["whisper_hf@b1"], timings["clsr@b1"])
    prof = saved["profile_clsr"]["clsr@b2"]
    stages = ("fbank", "encoder", "cif", "decoder", "vq_and_text_encoder", "other")
    assert sum(prof[k] for k in stages) == pytest.approx(prof["total"], abs=2e-3)
    assert 0.0 < prof["text_encoder"] <= prof["vq_and_text_encoder"] + 1e-4
    assert saved["torch_threads_during_timing"] == 1
    cos = saved["int8_quality"]["clsr_int8_random_speech_branch"]
    assert -1.0 <= cos["min"] <= cos["mean"] <= 1.0 + 1e-6 and cos["n"] == 2
    assert "| clsr | 1 |" in md.read_text()
    st = saved["targets"]["speedup_vs_stock_funasr_clsr_b1"]
    assert _same_ratio(st["value"], timings["clsr_stock@b1"], timings["clsr@b1"])


def test_stock_copy_runs_funasr_code_on_the_same_weights(tiny_te_dir):
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr_clsr.models.fused_attention import FusedAttentionSANM

    sp = load_benchmark("speed")
    bc = load_benchmark("bench_common")
    model, _ = bc.build_clsr(REPO / "conf" / "clsr_tiny.yaml", tiny_te_dir)
    stock = sp.funasr_stock_paths(model)
    assert type(stock.frontend) is WavFrontend
    assert not any(isinstance(m, FusedAttentionSANM) for m in stock.modules())
    assert any(isinstance(m, FusedAttentionSANM) for m in model.modules())  # the original is untouched
    clip = np.sin(np.arange(16000 * 2) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    a = model.encode_speech([clip]).detach()
    b = stock.encode_speech([clip]).detach()
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999


def test_forced_token_count_changes_only_the_token_count(tiny_te_dir):
    sp = load_benchmark("speed")
    bc = load_benchmark("bench_common")
    model, _ = bc.build_clsr(REPO / "conf" / "clsr_tiny.yaml", tiny_te_dir)
    wav = tone_speech("one two three four", seed=3)
    plain = model.encode_speech([wav])
    with sp.forced_token_count(model, None):
        same = model.encode_speech([wav])
    assert np.allclose(plain.numpy(), same.numpy())
    for n in (3, 11):
        assert sp.check_forced_length(model, wav, n) == n
    assert "calc_predictor" not in model.__dict__  # the patch is removed afterwards


def test_longform_tiny_end_to_end(tmp_path, qa_jsonl):
    lf = load_benchmark("longform")
    out = tmp_path / "longform.json"
    report = lf.main(["--tiny", "--jsonl", str(qa_jsonl), "--minutes", "0.25", "--window", "4", "--batch", "4",
                      "--memory-hours", "0.005", "--threads", "1", "--work", str(tmp_path / "work"),
                      "--json", str(out)])
    saved = json.loads(out.read_text())
    (rec,) = saved["recordings"]
    assert rec["questions"] == rec["contexts"] >= 2 and rec["segments"] >= 3
    assert rec["audio_s"] == pytest.approx(15.0, abs=8.0)
    for system in ("clsr", "cascade_dense", "cascade_bm25"):
        assert 0.0 <= rec[system]["hit@1"] <= rec[system]["hit@3"] <= 1.0, system
    assert 0.0 < rec["chance@1"] <= 1.0
    assert rec["query_ms"]["median"] > 0 and rec["index_rtf"] > 0
    mem = saved["memory"]
    assert mem["peak_rss_mb"] >= mem["rss_after_model_load_mb"] > 0 and mem["segments"] >= 4
    assert set(saved["targets"]) >= {"peak_memory_mb_0.005h"}
    assert report["model"]["what"].startswith("tiny random model")
    assert not list((tmp_path / "work").glob("*.wav"))  # recordings are removed once scored


@pytest.mark.parametrize("backend", [(), ("--backend", "onnx", "--quantize")], ids=["torch", "onnx_int8"])
def test_serve_load_tiny_end_to_end(tmp_path, backend):
    """A real `funasr-clsr serve` process: a 3-minute recording, two clients, the server's own timings
    (torch, or the model exported to ONNX first and served on onnxruntime int8)."""
    sv = load_benchmark("serve")
    report = sv.main(["--tiny", "--minutes", "3", "--clients", "2", "--queries", "6", "--warmup", "2",
                      "--single-client", "4", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "s.json"),
                      *backend])
    assert report["server_backend"] == ("onnx int8" if backend else "torch")  # what the server's /health says
    assert report.get("onnx_export", "exported here").startswith("exported here")
    load = report["load"]
    assert load["errors"] == 0 and load["answered"] == 12 and load["latency_ms"]["count"] == 12
    assert set(load["server_ms"]) == {"took", "encode", "search", "batch"}
    for side in (load, report["single_client"]):
        srv, lat = side["server_ms"], side["latency_ms"]
        assert 0 < srv["encode"]["p50"] <= srv["took"]["p50"] and srv["took"]["max"] <= lat["max"]
    assert report["single_client"]["latency_ms"]["count"] == 4
    assert json.loads((tmp_path / "s.json").read_text())["load"]["server_ms"]["took"]["count"] == 12


def test_recording_layout_is_sample_exact(tmp_path, qa_jsonl):
    import soundfile as sf

    lf = load_benchmark("longform")
    contexts = lf.context_rows(qa_jsonl)
    rec = lf.build_recording(contexts, 0.2, tmp_path / "r.wav", gap_s=0.25)
    wav, sr = sf.read(tmp_path / "r.wav", dtype="float32")
    assert len(wav) / sr == pytest.approx(rec["seconds"])
    first, second = rec["contexts"][:2]
    src, _ = sf.read(first["source"], dtype="float32")
    assert first["start_sample"] == 0 and first["end_sample"] == len(src)
    assert second["start_sample"] == len(src) + int(0.25 * sr)
    assert np.allclose(wav[: len(src)], src, atol=1 / 32768 + 1e-6)
    assert not wav[first["end_sample"]:second["start_sample"]].any()


def test_int8_scopes_quantise_the_right_layers(tiny_te_dir):
    sp = load_benchmark("speed")
    bc = load_benchmark("bench_common")
    model, _ = bc.build_clsr(REPO / "conf" / "clsr_tiny.yaml", tiny_te_dir)

    def quantised(m):
        return {n.split(".")[0] for n, mod in m.named_modules() if mod._get_name() == "DynamicQuantizedLinear"}

    assert "text_encoder" not in quantised(sp.quantize_int8(model, "speech")) and "decoder" in quantised(
        sp.quantize_int8(model, "speech"))
    assert {"text_encoder", "encoder", "decoder"} <= quantised(sp.quantize_int8(model, "all"))
    assert quantised(model) == set()  # the fp32 model is left as it was
    with pytest.raises(ValueError, match="int8 scope"):
        sp.quantize_int8(model, "half")


def test_whisper_base_targets_need_two_times_at_equal_precision():
    sp = load_benchmark("speed")
    runs = {"wclsr": 1.0, "fw_base_fp32": 1.9, "wclsr_int8": 0.6, "fw_base_int8": 1.5}
    timings = {f"{s}@b{b}": {"median_s": t * b, "rtf": t / 30.0} for s, t in runs.items() for b in (1, 8)}
    timings["fw_base_int8@b8"]["forced_length_ok"] = False  # decoded another length: no ratio from it
    out = sp.evaluate_targets(timings, batch=8, cosines={})
    fp = out["speedup_wclsr_vs_fw_base_fp32_b1"]
    assert fp["value"] == pytest.approx(1.9) and not fp["met"] and fp["margin"] == pytest.approx(0.95)
    assert out["speedup_wclsr_int8_vs_fw_base_int8_b1"]["met"]  # 2.5x: int8 is compared with int8
    assert "speedup_wclsr_int8_vs_fw_base_int8_b8" not in out
    assert out["rtf_wclsr_fp32"]["met"] and out["rtf_wclsr_fp32"]["value"] == pytest.approx(1 / 30, abs=1e-4)
    assert out["rtf_wclsr_int8"]["value"] == pytest.approx(0.02) and out["rtf_wclsr_int8"]["met"]


def test_whisper_clsr_model_must_have_the_whisper_encoder(tmp_path):
    sp = load_benchmark("speed")
    d = tmp_path / "sanm_model"
    d.mkdir()
    (d / "config.yaml").write_text("model: CLSR\nencoder: SANMEncoder\n")
    args = sp.parse_args(["--systems", "wclsr", "--whisper-clsr-model", str(d)])
    with pytest.raises(ValueError, match=r"sanm_model: its encoder is SANMEncoder, not WhisperAudioEncoder"):
        sp.build_whisper_clsr(args, tmp_path, REPO, None)
    args = sp.parse_args(["--systems", "wclsr", "--whisper-clsr-model", str(tmp_path / "none")])
    with pytest.raises(ValueError, match="no config.yaml"):
        sp.build_whisper_clsr(args, tmp_path, REPO, None)


def test_batch_one_run_keeps_the_speed_target():
    sp = load_benchmark("speed")
    timings = {f"{s}@b1": {"median_s": t, "rtf": t / 30.0} for s, t in (("clsr", 1.5), ("whisper_hf", 7.5))}
    target = sp.evaluate_targets(timings, batch=1, cosines={})["speedup_vs_whisper_hf_b1_fp32"]
    assert target["value"] == pytest.approx(5.0) and target["target"] == 4.5 and target["met"]


def test_longform_keeps_only_unseen_voice_or_rate_contexts(tmp_path):
    lf = load_benchmark("longform")
    rows = [{"source": f"c{i}.wav", "question": "q", "context_id": f"c{i}", "voice": v, "rate": r}
            for i, (v, r) in enumerate([("a", 150), ("a", 200), ("new", 150), ("b", 150)])]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [c["context_id"] for c in lf.context_rows(path)] == ["c0", "c1", "c2", "c3"]
    kept = lf.context_rows(path, seen_voices="a b", seen_rates="140 150")
    assert [c["context_id"] for c in kept] == ["c1", "c2"]  # an unseen rate, an unseen voice
    assert [c["context_id"] for c in lf.context_rows(path, seen_voices="a b")] == ["c2"]


def test_sensitivity_dynamic_plans_use_funasr_quantize_dynamic_even_with_the_export_route(tmp_path):
    """onnx_quant_sensitivity's "funasr" plan must be FunASR's quantize_dynamic, not the block-wise
    scheme the plugin's export routes speech graphs to (a run compared block-wise with itself)."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from funasr_clsr.models.clsr import export_meta

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="encoder_mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(proto, {"branch": '"speech"', "int8_scheme": '"blockwise"'})
    fp32 = tmp_path / "speech.onnx"
    onnx.save(proto, str(fp32))
    export_meta._use_speech_int8_scheme()   # what importing the export does

    sens = load_benchmark("onnx_quant_sensitivity")
    ops = {}
    for plan, weight in (("funasr", "uint8"), ("blockwise_b128", "blockwise128")):
        out = tmp_path / f"{plan}.onnx"
        sens.quantize_plan(fp32, out, ["encoder_mm"], lambda n: False, weight)
        ops[plan] = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulNBits" not in ops["funasr"] and "MatMulInteger" in ops["funasr"]
    assert "MatMulNBits" in ops["blockwise_b128"]


def test_onnx_attention_layer_three_ways_agree(tmp_path):
    """benchmarks/onnx_attention.py at toy size: every variant gives torch's attention on the valid rows."""
    out = tmp_path / "attention.json"
    report = load_benchmark("onnx_attention").main(["--windows", "4", "--frames", "24", "--short-frames", "10", "--heads", "2",
                                           "--head-dim", "8", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["shape"]["padded_windows"] == 2
    assert set(report["systems"]) == {"torch_sdpa", "onnx_decomposed", "onnx_mha", "onnx_mha_unpadded",
                                      "torch_sdpa_unpadded"}
    for name in ("onnx_decomposed", "onnx_mha"):
        assert report["systems"][name]["max_abs_diff_vs_torch"] < 1e-5, name
    assert all(len(r["runs_ms"]) == 1 and r["median_ms"] >= 0 for r in report["systems"].values())  # toy: ~0 ms
    with pytest.raises(SystemExit):
        load_benchmark("onnx_attention").main(["--short-frames", "2000"])  # longer than the window
