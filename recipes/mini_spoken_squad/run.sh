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
# Logs: exp/<profile>/logs/stage<N>_*.log.  Finished stages leave data/<profile>/.stage<N>.done;
# a re-run skips them unless their settings changed (synthesis then reuses every valid wav).

set -euo pipefail
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
test_voices=
rates=
pitches=

help_message="Mini Spoken-SQuAD (espeak-ng) recipe. Stages: 0 data, 1 data checks.
Options shown as \"\" take their value from conf/profiles/<profile>.sh."

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
exp=exp/${profile}
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
  settings+=" rates=${rates} pitches=${pitches} data_src=$(cat data_src/*.jsonl | cksum | cut -d' ' -f1)"
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
        --rates "${rates}" --pitches "${pitches}" --seed "${seed}"
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
