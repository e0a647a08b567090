# shellcheck shell=bash
# Profile "quick": the whole demo (data + training + evaluation) in <= 20 min on 2 CPU cores.
# Data step budget: ~3 min.  Sourced by run.sh after option parsing: every value below is
# only a default (": ${var:=...}"), so `run.sh --qa-test-contexts 100` still wins.
# Sizes measured for this profile: see README / data/quick/summary.json. The budget is set by the
# Whisper-base encoder: every utterance is encoded once (RTF ~0.04 on 2 cores, then cached), so
# the audio below (~4 h) is most of the 20 minutes.

# QA pairs (one spoken context + one spoken question each)
: "${qa_train_contexts:=250}"   # train contexts (of 2,263 in the 42 training articles); 0 = all
: "${qa_train_max_sec:=30}"     # train/dev contexts cut to a run of sentences <= this (keeps the answer sentence)
: "${qa_dev_contexts:=30}"      # from the 2 held-out training articles
: "${qa_test_contexts:=100}"    # SQuAD dev part 1 subset (seeded, spread over all 24 articles); 0 = all 1,048
# ASR pre-training utterances (sentences / chunks, synthesised on their own)
: "${asr_train_utts:=800}"
: "${asr_dev_utts:=60}"
: "${asr_max_words:=24}"        # longer sentences are cut, preferably at pauses ...
: "${asr_max_sec:=12}"          # ... and also by characters, to stay under ~12 s at the slowest rate
# espeak-ng speakers: voice[+variant] specs (see `espeak-ng --voices=en`, `--voices=variant`)
: "${voices:=en-us en-us+f3 en-gb-x-rp+m3 en-029+f2 en-gb-scotland+m2 en-us-nyc+f4}"
# the test split adds speakers and rates that training never hears: seen and unseen rows (stage 6)
: "${unseen_voices:=en-us+m5 en-gb-x-rp+f1 en-029+m6 en-gb-scotland+f4}"
: "${test_voices:=${voices} ${unseen_voices}}"
: "${rates:=140 150 160 170 180 190}"   # words per minute
: "${test_rates:=${rates} 130 200}"
: "${pitches:=40 45 50 55 60}"
# Training (stage 2-4) and evaluation (stage 6)
: "${token_min_count:=5}"
if [ "${speech_branch}" = sanm ]; then  # the from-scratch branch (as measured before the Whisper branch)
  : "${asr_epochs:=6}"
  : "${asr_warmup_epochs:=3}"  # not measured in quick: the same ~40 % share as full
else
  # Stage 3 starts from the released speech branch (release/whisper_base_cif: Whisper-base's top 2
  # blocks, CIF predictor, SAN-M decoder and CTC head trained on 26 h by the full profile's data in four
  # steps, see its README.md; the whole encoder stays frozen here) and trains release_epochs more on
  # this profile's qa_train. --release none: stage 3 from the frozen
  # Whisper-base encoder alone (asr_epochs over asr_train + qa_train; the demo then retrieves far less).
  : "${release:=release/whisper_base_cif}"
  : "${release_epochs:=1}"
  : "${asr_epochs:=2}"
  : "${asr_warmup_epochs:=0}"  # a pretrained encoder needs no CTC warm-up phase
fi
: "${joint_epochs:=2}"
: "${systems:=cascade}"
: "${whisper:=false}"
: "${speech_questions:=true}"  # also evaluate clsr with spoken questions (row clsr_speech_q)
