"""recipes/mini_spoken_squad/local/asr_diagnose.py on a tiny model trained for one epoch with
the CTC head, its readout into the decoder and the CIF alignment loss (also run through FunASR's trainer)."""
import json
import subprocess
import sys

from clsr_testing import REPO, TINY_TE


def test_diagnosis_of_a_trained_speech_branch(pair_dir, cmvn, tmp_path):
    out = tmp_path / "asr"
    train = subprocess.run(
        [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", "clsr_tiny.yaml",
         "++model_conf.text_encoder_conf=null", "++model_conf.nce_weight=0", "++model_conf.ctc_weight=0.3",
         "++model_conf.cif_align_weight=1.0", "++model_conf.ctc_readout=true", "++model_conf.sampling_ratio=0.0", f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}",
         f"++frontend_conf.cmvn_file={cmvn}", f"++train_data_set_list={pair_dir / 'text_q.jsonl'}",
         f"++valid_data_set_list={pair_dir / 'text_q.jsonl'}", f"++output_dir={out}", "++train_conf.max_epoch=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "loss_cif_align" in train.stdout + train.stderr
    script = REPO / "recipes" / "mini_spoken_squad" / "local" / "asr_diagnose.py"
    proc = subprocess.run([sys.executable, str(script), "--exp", str(out), "--jsonl", str(pair_dir / "text_q.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["n"] == 8 and 0 <= report["ctc_aligned_utterances"] <= 8
    for key in ("decoder_acc_true_length", "decoder_acc_ctc_alignment"):
        assert 0.0 <= report[key] <= 1.0
    assert report["ctc_wer"] >= 0 and report["decoder_wer"] >= 0 and report["alpha_l1_per_token"] >= 0
    assert "REF " in proc.stderr and "CTC " in proc.stderr

    missing = subprocess.run([sys.executable, str(script), "--exp", str(out), "--checkpoint", "nope.pt",
                              "--jsonl", str(pair_dir / "text_q.jsonl")], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "nope.pt: checkpoint not found" in missing.stderr
