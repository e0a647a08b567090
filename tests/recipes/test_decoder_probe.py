"""recipes/mini_spoken_squad/local/decoder_probe.py on the tiny model: cached encoder outputs, variants, dev report."""
import json
import subprocess
import sys

from clsr_testing import REPO, TINY_TE

SCRIPT = REPO / "recipes" / "mini_spoken_squad" / "local" / "decoder_probe.py"


def test_probe_trains_variants_on_cached_encoder_outputs(pair_dir, cmvn, tmp_path):
    cache = tmp_path / "enc.pt"
    cmd = [sys.executable, str(SCRIPT), "--config", str(REPO / "conf" / "clsr_tiny.yaml"),
           "--tokens", str(TINY_TE / "vocab.txt"), "--cmvn", str(cmvn),
           "--model-conf", json.dumps({"ctc_weight": 0.3, "cif_align_weight": 1.0, "sampling_ratio": 0.0}),
           "--train", str(pair_dir / "text_q.jsonl"), "--dev", str(pair_dir / "text_q.jsonl"),
           "--cache", str(cache), "--steps", "4", "--eval-every", "2", "--ctc-steps", "2", "--batch", "4",
           "--save", str(tmp_path / "m"), "--variant", "baseline", "--variant", "ctc_init+readout+stride4", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                                                  "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert set(report) == {"baseline", "ctc_init+readout+stride4"}
    for row in report.values():
        assert row["dev_utts"] == 8 and row["steps"] == 4
        assert [s for s, _ in row["dev_curve"]] == [2, 4]
        assert 0.0 <= row["decoder_acc_true_length"] <= 1.0 and row["ctc_wer"] >= 0 and row["decoder_wer"] >= 0
        assert row["example"]["ref"] == "the king of the city"
    assert cache.is_file() and (tmp_path / "m.baseline.pt").is_file()
    # the second run reads the cache instead of encoding again
    again = subprocess.run(cmd[:cmd.index("--save")] + ["--variant", "baseline"], capture_output=True, text=True,
                           timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert again.returncode == 0 and "encode train" not in again.stderr
