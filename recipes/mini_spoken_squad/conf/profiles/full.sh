# shellcheck shell=bash
# Profile "full": data + training + evaluation in <= 2 h on 2 CPU cores.  Data step budget:
# ~20 min.  Sourced by run.sh after option parsing; every value is only a default.

: "${qa_train_contexts:=1500}"  # of 2,263 train contexts; 0 = all
: "${qa_train_max_sec:=60}"
: "${qa_dev_contexts:=100}"
: "${qa_test_contexts:=0}"      # 0 = all 1,048 SQuAD dev part 1 contexts (kept whole)
: "${asr_train_utts:=6000}"
: "${asr_dev_utts:=300}"
: "${asr_max_words:=24}"
: "${asr_max_sec:=12}"
: "${voices:=en-us en-us+f3 en-gb-x-rp+m3 en-029+f2 en-gb-scotland+m2 en-us-nyc+f4 en+m7 en-gb-x-gbclan+f1 en-gb-x-gbcwmd+m4 en-us+klatt2 en-gb+f5 en-029+m1}"
: "${test_voices:=${voices}}"
: "${rates:=140 150 160 170 180 190}"
: "${pitches:=40 45 50 55 60}"
# Training (stage 2-4) and evaluation (stage 6). Measured on 2 shared cores (README): stage 3 runs
# ~672 steps (4-5 min) per epoch; one joint epoch of CLSR over the 1,500 contexts ~15 min; evaluating
# one speech system on the 1,048 test contexts ~2 min (6-7 min before the torch fbank and fused
# attention). Whisper-base over the 13.8 h test set costs ~65 core-minutes (RTF 0.08 per thread);
# clsr_no_vq ~6.5 min + evaluation, CLAP-style ~2 min + evaluation: options (--whisper true,
# --systems "cascade parabge clap clsr_no_vq") outside the 2-hour budget.
: "${token_min_count:=5}"
: "${asr_epochs:=10}"
: "${asr_warmup_epochs:=4}"  # as in the measured full run: its CTC plateau broke in epoch 2 (README, "ASR from nothing")
: "${joint_epochs:=1}"
: "${systems:=cascade parabge}"
: "${whisper:=false}"
: "${speech_questions:=false}"  # the clsr_speech_q row (re-encodes every context): quick profile only
