"""ONNX export the FunASR way (CLSR.export -> funasr.utils.export_utils) and the onnxruntime backend.

Models are trained for a few steps first: an untrained decoder's logits sit near ties, so int8
noise flips its argmax tokens (the VQ adaptor's forward is an argmax), which says nothing about
the export. Trained, the int8 graphs stay within cosine 0.99 of torch, fp32 within 1e-4.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from clsr_testing import CONTEXTS, QUESTIONS, build_tiny, tiny_cmvn, tiny_config, tone_speech, training_batch

SR = 16000
TRAIN_STEPS = 30
TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "num_mel_bins": 80, "max_source_positions": 100}  # 2 s windows


def _train(am, jsonl, steps: int = TRAIN_STEPS):
    m = am.model
    batch = training_batch(am, jsonl)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    for _ in range(steps):
        loss, _, _ = m(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _whisper_config() -> dict:
    """The Whisper mini config's shape at toy size: 25 frames/s (output_stride 2), CTC read-out."""
    cfg = tiny_config()
    cfg["encoder"] = "WhisperAudioEncoder"
    cfg["encoder_conf"] = {"whisper_config": TINY_WHISPER, "freeze": True, "output_stride": 2, "max_windows": 4}
    cfg["frontend"] = "WhisperLogMelFrontend"
    cfg["frontend_conf"] = {"fs": SR, "n_mels": 80}
    cfg["predictor_conf"]["idim"] = TINY_WHISPER["d_model"]
    cfg["model_conf"].update(ctc_weight=0.3, sampling_ratio=0.0, ctc_readout=True, mwer_weight=0.0)
    return cfg


@pytest.fixture(scope="module")
def sanm_dir(pair_dir, tmp_path_factory):
    """A trained tiny SAN-M CLSR model directory, exported with AutoModel(...).export(quantize=True)."""
    from funasr import AutoModel

    from funasr_clsr.export import export_model_dir

    root = tmp_path_factory.mktemp("sanm")
    cmvn = tiny_cmvn(root / "am.mvn")
    m = _train(build_tiny(frontend_cmvn=str(cmvn)), pair_dir / "text_q.jsonl")
    out = export_model_dir(tiny_config(str(cmvn)), m, root / "model")
    am = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")
    before = am.model.encode_speech([str(pair_dir / "ctx0.wav")])
    assert am.export(type="onnx", quantize=True) == str(out)
    # the export worked on a copy: the loaded model still runs as before
    torch.testing.assert_close(am.model.encode_speech([str(pair_dir / "ctx0.wav")]), before)
    return out, am.model


@pytest.fixture(scope="module")
def whisper_dir(pair_dir, tmp_path_factory):
    """A trained tiny Whisper-encoder CLSR model directory, exported by FunASR's ``funasr-export`` CLI."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    from funasr_clsr.export import export_model_dir

    cfg = _whisper_config()
    torch.manual_seed(0)
    am = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR", seed=0)
    m = _train(am, pair_dir / "text_q.jsonl")
    root = tmp_path_factory.mktemp("whisper")
    out = export_model_dir(cfg, m, root / "model")
    # FunASR's own CLI; cwd: Hydra writes its outputs/ folder there
    proc = subprocess.run([str(Path(sys.executable).parent / "funasr-export"), f"++model={out}", "++type=onnx",
                           "++quantize=true"], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    back = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    return out, back


def _inputs(pair_dir):
    """The eight training contexts (files) and longer arrays: two contexts, and five (past a 2 s window)."""
    longer = [tone_speech(" ".join(CONTEXTS[i:i + 2]), seed=20 + i) for i in range(0, 8, 2)]
    return [str(pair_dir / f"ctx{i}.wav") for i in range(8)] + longer + [tone_speech(" ".join(CONTEXTS[:5]), seed=9)]


def _cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("which", ["sanm", "whisper"])
def test_onnx_embeddings_match_torch_fp32_and_int8(which, sanm_dir, whisper_dir, pair_dir):
    from funasr_clsr.onnx_runtime import OnnxCLSR

    out, model = sanm_dir if which == "sanm" else whisper_dir
    for name in ("model.onnx", "model_quant.onnx", "model_eb.onnx", "model_eb_quant.onnx"):
        assert (out / name).is_file(), name
    inputs = _inputs(pair_dir)
    ref, ref_text = model.encode_speech(inputs, batch_size=5, return_text=True)
    ref_q = model.encode_text(QUESTIONS)
    ref_c = model.encode_text(CONTEXTS, is_query=False)
    for quantize, floor in ((False, 0.9999), (True, 0.99)):
        onnx = OnnxCLSR(out, quantize=quantize, intra_op_num_threads=1)
        vec, text = onnx.encode_speech(inputs, batch_size=5, return_text=True)
        assert vec.shape == ref.shape and vec.dtype == np.float32
        cos = _cosines(vec, ref.numpy())
        if not quantize:
            assert cos.min() >= floor, np.round(cos, 4)
            assert text == ref_text  # same argmax tokens, same transcripts
        else:
            # int8 moves the encoder's frames a little; where that tips an uncertain argmax the
            # transcript and so the vector change (how often depends on the CPU's int8 kernels:
            # docs/benchmarks.md, "ONNX"). Where the tokens agree, the vector must too.
            same = np.array([a == b for a, b in zip(text, ref_text)])
            assert same.mean() >= 0.75, (text, ref_text)
            assert cos[same].min() >= 0.999 and cos.min() >= 0.9, (np.round(cos, 4), same)
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
        assert _cosines(onnx.encode_text(QUESTIONS), ref_q.numpy()).min() >= floor
        assert _cosines(onnx.encode_text(CONTEXTS, is_query=False), ref_c.numpy()).min() >= floor
        # batching does not change a vector (each item is encoded on its own frames)
        alone = onnx.encode_speech(inputs[-1:])
        assert _cosines(alone, vec[-1:]).min() >= (0.99999 if not quantize else 0.99)
    assert onnx.encode_speech([]).shape == (0, ref.shape[1])


def test_quantize_text_runs_the_fp32_speech_graph_beside_the_int8_text_encoder(whisper_dir, pair_dir):
    """quantize="text": recordings through the exact speech graph, questions through the int8 one."""
    from funasr_clsr.models.clsr.export_meta import QUANTIZE_CHOICES, exported_paths
    from funasr_clsr.onnx_runtime import OnnxCLSR

    out, _ = whisper_dir
    assert QUANTIZE_CHOICES == ("none", "text", "all")
    assert [p.name for p in exported_paths(out, "text")] == ["model.onnx", "model_eb_quant.onnx"]
    assert exported_paths(out, True) == exported_paths(out, "all")
    assert exported_paths(out, False) == exported_paths(out, "none")
    with pytest.raises(ValueError, match="quantize must be one of none, text, all"):
        exported_paths(out, "speech")
    inputs = _inputs(pair_dir)
    fp32, int8 = (OnnxCLSR(out, quantize=q, intra_op_num_threads=1) for q in (False, True))
    mixed = OnnxCLSR(out, quantize="text", intra_op_num_threads=1)
    assert mixed.quantize == "text" and "quantize='text'" in repr(mixed)
    np.testing.assert_array_equal(mixed.encode_speech(inputs, batch_size=5), fp32.encode_speech(inputs, batch_size=5))
    np.testing.assert_array_equal(mixed.encode_text(QUESTIONS), int8.encode_text(QUESTIONS))


def test_metadata_names_the_source_model_and_what_the_runtime_needs(sanm_dir):
    import onnxruntime as ort

    from funasr_clsr.hub import model_identity
    from funasr_clsr.models.clsr.export_meta import ONNX_FORMAT_VERSION

    out, model = sanm_dir
    speech = ort.InferenceSession(str(out / "model_quant.onnx")).get_modelmeta().custom_metadata_map
    text = ort.InferenceSession(str(out / "model_eb.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(speech["clsr_onnx_format"]) == ONNX_FORMAT_VERSION
    assert (json.loads(speech["model_id"]), json.loads(speech["model_version"])) == model_identity(out)
    assert json.loads(speech["branch"]) == "speech" and json.loads(speech["encoder"]) == "SANMEncoder"
    assert json.loads(text["max_length"]) == model.text_encoder.max_length
    sess = ort.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["speech", "speech_lengths"]
    assert [o.name for o in sess.get_outputs()] == ["embedding", "token_ids", "token_num"]


def _op_types(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_speech_int8_is_blockwise_and_the_dynamic_scheme_stays_an_option(sanm_dir, whisper_dir, tmp_path):
    """quantize=True: the speech graph's weights in int8 blocks (MatMulNBits, its argmax layers fp32), the
    text encoder FunASR's quantize_dynamic; speech_int8="dynamic" gives FunASR's for both."""
    import shutil

    from funasr_clsr.models.clsr.export_meta import ExportError

    for out in (sanm_dir[0], whisper_dir[0]):  # AutoModel(...).export and funasr-export
        assert "MatMulNBits" in _op_types(out / "model_quant.onnx")
        assert "DynamicQuantizeLinear" not in _op_types(out / "model_quant.onnx")
        assert "DynamicQuantizeLinear" in _op_types(out / "model_eb_quant.onnx")
    out, model = sanm_dir
    work = tmp_path / "model"
    shutil.copytree(out, work)
    from funasr import AutoModel

    am = AutoModel(model=str(work), device="cpu", disable_update=True, log_level="ERROR")
    am.export(type="onnx", quantize=True, speech_int8="dynamic")
    assert "MatMulNBits" not in _op_types(work / "model_quant.onnx")
    assert "DynamicQuantizeLinear" in _op_types(work / "model_quant.onnx")
    with pytest.raises(ExportError, match="speech_int8 must be one of blockwise, dynamic, got 'int4'"):
        model.export(type="onnx", output_dir=str(work), speech_int8="int4")


def test_index_and_query_with_the_onnx_backend(sanm_dir, pair_dir, tmp_path, capsys):
    """funasr-clsr index/query --backend onnx: the torch backend's index identity and answers."""
    from funasr_clsr.bin.cli import main
    from funasr_clsr.onnx_runtime import OnnxCLSR
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    out, _ = sanm_dir
    clips = [tone_speech(c, seed=i) for i, c in enumerate(CONTEXTS)]
    sf.write(tmp_path / "talk.wav", np.concatenate([np.pad(x, (0, 2 * SR - len(x))) for x in clips]), SR)
    torch_retriever = LongFormRetriever(str(out), window_s=2.0)
    onnx_retriever = LongFormRetriever(OnnxCLSR(out, quantize=True), window_s=2.0)
    assert (onnx_retriever.model_id, onnx_retriever.model_version) == \
        (torch_retriever.model_id, torch_retriever.model_version)  # one model, either backend
    torch_retriever.index_recordings([tmp_path / "talk.wav"], tmp_path / "torch_idx", progress=False)
    wav_q = ["--question-wav", str(pair_dir / "ctx3.wav")]
    expected = torch_retriever.query(tmp_path / "torch_idx", QUESTIONS, top_k=1, question_wavs=wav_q[1:])
    capsys.readouterr()  # loading notices
    argv = ["--model", str(out), "--index", str(tmp_path / "idx"), "--backend", "onnx", "--json"]
    rc = main(["index", *argv, "--window", "2", "--no-progress", str(tmp_path / "talk.wav")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["num_segments"] == 8 and report["model_id"] == torch_retriever.model_id
    for extra in ([], ["--quantize"], ["--quantize-text"]):
        rc = main(["query", *argv, *extra, *QUESTIONS, *wav_q, "--top-k", "1"])
        answers = [a["hits"][0] for a in json.loads(capsys.readouterr().out)]
        assert rc == 0 and len(answers) == len(expected) == 9
        if not extra:  # fp32: the same segments with the same scores
            assert [a["start"] for a in answers] == [e[0]["start"] for e in expected]
            np.testing.assert_allclose([a["score"] for a in answers], [e[0]["score"] for e in expected], atol=1e-4)
        else:  # int8: where it picks another segment, that one scored within the int8 noise of torch's pick
            np.testing.assert_allclose([a["score"] for a in answers], [e[0]["score"] for e in expected], atol=0.02)


def test_whisper_attention_is_exported_as_the_fused_op(whisper_dir):
    """Each Whisper layer's attention is one com.microsoft.MultiHeadAttention, in the fp32 and the int8
    graph (the step-by-step scores cost twice torch's time), once for whole windows (no mask) and once
    for the rest (key padding mask); batches with no partial window, or only one, match torch."""
    import onnx

    from funasr_clsr.onnx_runtime import OnnxCLSR

    out, model = whisper_dir
    layers = TINY_WHISPER["encoder_layers"]
    for name in ("model.onnx", "model_quant.onnx"):
        graph = onnx.load(str(out / name), load_external_data=False).graph
        fused = [n for n in graph.node if n.op_type == "MultiHeadAttention"]
        assert all(n.domain == "com.microsoft" for n in fused), name
        assert sorted(len(n.input) for n in fused) == [3] * layers + [5] * layers, name
    window = 2 * TINY_WHISPER["max_source_positions"] * SR // 100  # samples per encoder window
    rng = np.random.default_rng(3)
    onnx_model = OnnxCLSR(out)
    for lengths in ([2 * window, window], [window // 2], [2 * window, 2 * window]):
        clips = [0.1 * rng.standard_normal(n).astype(np.float32) for n in lengths]
        with torch.no_grad():
            ref = model.encode_speech(clips, batch_size=len(clips)).numpy()
        got = onnx_model.encode_speech(clips, batch_size=len(clips))
        assert _cosines(got, ref).min() > 0.9999, lengths


def test_evaluate_scores_the_exported_graphs(sanm_dir, pair_dir, tmp_path, capsys):
    """python -m funasr_clsr.bin.evaluate --backend onnx: fp32 gives torch's retrieval row."""
    from funasr_clsr.bin import evaluate

    out, _ = sanm_dir
    common = ["--mode", "embed", "--model", str(out), "--jsonl", str(pair_dir / "text_q.jsonl"),
              "--results", str(tmp_path / "r.json")]
    rows = {}
    for system, extra in (("torch", []), ("onnx", ["--backend", "onnx"]),
                          ("onnx_int8", ["--backend", "onnx", "--quantize", "all"])):
        evaluate.main([*common, "--system", system, *extra])
        rows[system] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["onnx"]["q2c"] == pytest.approx(rows["torch"]["q2c"], abs=1e-6)
    assert rows["onnx"]["wer"] == rows["torch"]["wer"] and rows["onnx"]["backend"] == "onnx (int8: none)"
    assert rows["onnx_int8"]["backend"] == "onnx (int8: all)" and "backend" not in rows["torch"]
    assert set(json.loads((tmp_path / "r.json").read_text())["systems"]) == {"torch", "onnx", "onnx_int8"}
    unexported = tmp_path / "unexported"
    unexported.mkdir()
    (unexported / "config.yaml").write_text((out / "config.yaml").read_text())
    with pytest.raises(SystemExit, match="export it first"):
        evaluate.main([*common[:3], str(unexported), *common[4:], "--system", "x", "--backend", "onnx"])
    with pytest.raises(SystemExit):
        evaluate.main([*common, "--system", "x", "--quantize", "all"])  # int8 needs the ONNX backend


def test_op_profiles_of_benchmarks_onnx_speed(sanm_dir, pair_dir, tmp_path):
    """onnx_speed.py --profile-ops: milliseconds by op type from onnxruntime's and torch's profilers."""
    from clsr_testing import load_benchmark
    from funasr_clsr.onnx_runtime import OnnxCLSR

    bench = load_benchmark("onnx_speed")
    out, model = sanm_dir
    clips = [sf.read(pair_dir / f"ctx{i}.wav", dtype="float32")[0] for i in range(3)]
    for quantize in (False, True):
        prof = bench.onnx_op_profile(OnnxCLSR(out, quantize=quantize), clips, tmp_path)
        ops = [op for op, _, _ in prof["by_op"]]
        assert "MatMul" in ops or "MatMulNBits" in ops or "MatMulInteger" in ops, ops
        assert prof["total_ms"] > 0 and prof["run_ms"] > 0
        assert sum(share for _, _, share in prof["by_op"]) <= 1.0 + 1e-3
    prof = bench.torch_op_profile(model, clips)
    assert prof["total_ms"] > 0 and any(op.startswith("aten::") for op, _, _ in prof["by_op"])


def test_bad_exports_and_stale_or_foreign_onnx_files_are_one_line_errors(sanm_dir, tmp_path, capsys):
    import shutil

    from funasr_clsr.bin.cli import main
    from funasr_clsr.models.clsr.export_meta import ExportError, stamp_metadata
    from funasr_clsr.onnx_runtime import OnnxCLSR, OnnxModelError

    out, model = sanm_dir
    with pytest.raises(ExportError, match="supports the encoders SANMEncoder, WhisperAudioEncoder; .*'ConformerEncoder'"):
        model.export(type="onnx", encoder="ConformerEncoder", output_dir=str(tmp_path))
    with pytest.raises(ExportError, match="format version 2, this funasr_clsr reads version 1"):
        model.export(type="onnx", clsr_format_version=2, output_dir=str(tmp_path))
    with pytest.raises(ExportError, match="type='onnx' only"):
        model.export(type="torchscript", output_dir=str(tmp_path))

    work = tmp_path / "model"
    shutil.copytree(out, work)
    for name in ("model_quant.onnx", "model_eb_quant.onnx"):
        (work / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"no model_quant.onnx / model_eb_quant.onnx; export it first"):
        OnnxCLSR(work, quantize=True)
    stamp_metadata(work / "model.onnx", {"clsr_onnx_format": 99, "funasr_clsr_version": "9.9"})
    with pytest.raises(OnnxModelError, match="ONNX format 99, this funasr_clsr reads format 1: re-export"):
        OnnxCLSR(work)
    shutil.copy2(out / "model.onnx", work / "model.onnx")
    state = torch.load(work / "model.pt", weights_only=True)
    state["state_dict"]["decoder.output_layer.weight"] += 1.0
    torch.save(state, work / "model.pt")  # the model changed after its export
    with pytest.raises(OnnxModelError, match="exported from another model .* re-export it"):
        OnnxCLSR(work)
    (work / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(OnnxModelError, match="not a loadable ONNX model"):
        OnnxCLSR(work)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["clsr_format_version"] = 2
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["query", "--model", str(work), "--index", str(tmp_path / "idx"), "--backend", "onnx", "who"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "format version 2, this funasr_clsr reads version 1" in err[0]


def test_piece_seconds_decodes_in_pieces_on_both_backends(whisper_dir, pair_dir, tmp_path):
    """model_conf.piece_seconds from config.yaml: torch joins the pieces' decoder outputs, onnxruntime
    their token ids through the text graph; the vectors agree, and a no-VQ model is refused."""
    import shutil

    from funasr import AutoModel

    from funasr_clsr.onnx_runtime import OnnxCLSR, OnnxModelError

    src, _ = whisper_dir
    out = tmp_path / "pieced"
    shutil.copytree(src, out)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["model_conf"]["piece_seconds"] = 1.5
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    am = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")
    assert am.model.piece_seconds == 1.5
    am.export(type="onnx", quantize=True)  # the identity covers config.yaml: the old graphs are stale
    inputs = _inputs(pair_dir)
    ref, ref_text = am.model.encode_speech(inputs, batch_size=3, return_text=True)
    fp32 = OnnxCLSR(out, quantize=False, intra_op_num_threads=1)
    vec, text = fp32.encode_speech(inputs, batch_size=3, return_text=True)
    assert text == ref_text
    assert _cosines(vec, ref.numpy()).min() >= 0.9999
    # "text": recordings at the speech graph's fp32, questions int8
    mixed = OnnxCLSR(out, quantize="text", intra_op_num_threads=1)
    np.testing.assert_allclose(mixed.encode_speech(inputs, batch_size=3), vec, atol=1e-6)
    for bad in (0, "fast"):
        cfg["model_conf"]["piece_seconds"] = bad
        (out / "config.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(OnnxModelError, match=r"config.yaml: piece_seconds must be positive .* got "):
            OnnxCLSR(out, quantize=False, intra_op_num_threads=1)
    cfg["model_conf"]["piece_seconds"] = 1.5
    cfg["model_conf"]["use_vq"] = False
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(OnnxModelError, match="piece_seconds needs the VQ adaptor"):
        OnnxCLSR(out, quantize=False, intra_op_num_threads=1)
