"""Whisper-base conversion check and the speech branch's input layout, on recipe clips.

    python benchmarks/whisper_branch.py --jsonl recipes/mini_spoken_squad/data/quick/asr_dev.jsonl \
        --n 50 --out benchmarks/results/whisper_branch.json

For each clip (Whisper-base from the offline PyPI wheels, CTranslate2 fp32 vs the converted
transformers folder, one process, 2 threads):

* conversion: per-frame cosine of the converted encoder's output to ``ctranslate2 encode()`` on
  the 30 s padded input, and greedy transcripts of faster-whisper vs the converted model's own
  decoder (``generate``), scored against the references (WER after the recipe's normaliser);
* input layout: ``WhisperAudioEncoder`` outputs for the clip alone (``unpadded``) against the
  clip padded to 30 s (``padded``, as Whisper was trained), frame by frame, and what each costs.
  (Whisper's own decoder is no judge of the unpadded outputs: it relies on the padding frames
  to find the end of speech and loops without them; CLSR's decoder is trained on the layout.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_common import REPO

sys.path.insert(0, str(REPO / "recipes" / "mini_spoken_squad" / "local"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", required=True, help="FunASR jsonl with source (wav) and target")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--whisper", help="converted transformers folder (default: convert the offline wheels here)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON results (also printed)")
    a = ap.parse_args(argv)

    import ctranslate2
    import torch
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor
    from tqdm import tqdm
    from transformers import WhisperForConditionalGeneration
    
    from funasr_clsr.audio import load_audio
    from funasr_clsr.baselines.cascade import whisper_base_dir
    from funasr_clsr.evaluation import word_error_rate
    from funasr_clsr.frontend import whisper_log_mel
    from funasr_clsr.models.whisper_encoder import WhisperAudioEncoder
    from funasr_clsr.whisper_ct2 import convert
    from textnorm import normalize

    torch.set_num_threads(a.threads)
    ct2_dir = whisper_base_dir()
    hf_dir = Path(a.whisper) if a.whisper else REPO / "recipes" / "mini_spoken_squad" / "downloads" / "whisper-base"
    if not (hf_dir / "config.json").is_file():
        convert(ct2_dir, hf_dir)
    rows = [json.loads(line) for line in open(a.jsonl, encoding="utf-8") if line.strip()][: a.n]
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=a.threads)
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=a.threads)
    hf = WhisperForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    ours = {layout: WhisperAudioEncoder(whisper_path=str(hf_dir), input_layout=layout).eval()
            for layout in ("padded", "unpadded")}
    fe = FeatureExtractor(80)
    gen = dict(language="en", task="transcribe", num_beams=1, do_sample=False, max_new_tokens=200)
    cos_min, cos_mean, refs, hyp = [], [], [], {"faster_whisper": [], "converted_padded": []}
    layout_cos = []
    times = {"padded": 0.0, "unpadded": 0.0}
    audio_s = 0.0
    for r in tqdm(rows, desc="clips", unit="clip", file=sys.stderr):
        wav = load_audio(r["source"], target_sr=16000)
        audio_s += len(wav) / 16000
        refs.append(r["target"])
        padded = fe(wav, padding=480000)[None, :, :3000].astype(np.float32)  # (1, 80, 3000): as Whisper pads to 30 s
        ref_enc = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(padded), to_cpu=True))[0]
        with torch.no_grad():
            conv_enc = hf.model.encoder(torch.from_numpy(padded)).last_hidden_state[0].numpy()
        c = (ref_enc * conv_enc).sum(-1) / (np.linalg.norm(ref_enc, axis=-1) * np.linalg.norm(conv_enc, axis=-1))
        cos_min.append(float(c.min()))
        cos_mean.append(float(c.mean()))
        segs, _ = fw.transcribe(wav, language="en", beam_size=1, without_timestamps=True, temperature=0.0,
                                condition_on_previous_text=False, vad_filter=False)
        hyp["faster_whisper"].append(" ".join(s.text for s in segs))
        mel = whisper_log_mel(torch.from_numpy(wav))
        with torch.no_grad():
            hyp["converted_padded"].append(hf_decode(hf, gen, input_features=torch.from_numpy(padded)))
            outs = {}
            for layout, enc in ours.items():
                t = time.perf_counter()
                h, _, _ = enc(mel[None], torch.tensor([mel.size(0)]))
                times[layout] += time.perf_counter() - t
                outs[layout] = h[0]
            layout_cos.append(torch.nn.functional.cosine_similarity(outs["padded"], outs["unpadded"], dim=-1).numpy())
    result = {
        "clips": len(rows), "audio_seconds": round(audio_s, 1), "threads": a.threads,
        "encoder_cosine_to_ct2": {"mean": float(np.mean(cos_mean)), "worst_frame": float(np.min(cos_min))},
        "wer": {k: round(float(word_error_rate(refs, [normalize(x).target for x in v])["wer"]), 2)
                for k, v in hyp.items()},
        # the unpadded layout's outputs against the padded ones (same frames): how far the layouts differ
        "unpadded_vs_padded_cosine": {"mean": float(np.mean(np.concatenate(layout_cos))),
                                      "worst_frame": float(np.min(np.concatenate(layout_cos))),
                                      "share_below_0.9": float(np.mean(np.concatenate(layout_cos) < 0.9))},
        "encoder_seconds": {k: round(v, 2) for k, v in times.items()},
        "encoder_rtf": {k: round(v / audio_s, 4) for k, v in times.items()},
        "command": "python benchmarks/whisper_branch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    result["wer_gap_converted_vs_faster_whisper"] = round(result["wer"]["converted_padded"]
                                                          - result["wer"]["faster_whisper"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    return 0


def hf_decode(model, gen: dict, **inputs) -> str:
    from transformers import WhisperTokenizerFast

    tok = getattr(hf_decode, "tok", None)
    if tok is None:
        tok = hf_decode.tok = WhisperTokenizerFast.from_pretrained(model.name_or_path)
    ids = model.generate(**inputs, **gen)
    return tok.decode(ids[0], skip_special_tokens=True)


if __name__ == "__main__":
    sys.exit(main())
