import json
import subprocess
import sys

import numpy as np
import soundfile as sf


def test_am_mvn_normalises_the_features(tmp_path, pair_dir):
    from funasr.frontends.wav_frontend import WavFrontend, load_cmvn
    import torch

    out = tmp_path / "am.mvn"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    lines = (pair_dir / "text_q.jsonl").read_text().splitlines()
    lines.append(json.dumps({"key": "bad", "source": str(bad), "target": "x"}))
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "funasr_clsr.bin.compute_cmvn", "--jsonl", str(jl), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert "skipping" in proc.stderr and "bad.wav" in proc.stderr  # listed, not silently dropped
    cmvn = load_cmvn(str(out))
    assert cmvn.shape == (2, 560)
    fe = WavFrontend(cmvn_file=str(out), n_mels=80, lfr_m=7, lfr_n=6, dither=0.0)
    feats = []
    for line in lines[:-1]:
        wav, _ = sf.read(json.loads(line)["source"], dtype="float32")
        f, _ = fe(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        feats.append(f[0].numpy())
    allf = np.concatenate(feats)
    assert np.abs(allf.mean(0)).max() < 1e-2
    assert np.abs(allf.std(0) - 1).max() < 1e-2
