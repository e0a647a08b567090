#!/usr/bin/env bash
# Stage-3 training speed, funasr_clsr's code paths against FunASR's own, side by side:
#   ours  = conf/clsr_mini_en.yaml as the recipe trains it (WavFrontendVectorized, fused attention)
#   stock = the same with ++frontend=WavFrontend ++model_conf.fused_attention=false
# Each run trains one epoch over the first --utts utterances of asr_train from the stage-3
# checkpoint, runs alternate (stock, ours, stock, ours, ...), and one JSON line per run gives the
# wall time and the mean logged step time.
#
#   bash local/train_speed.sh --profile full --utts 600 --pairs 3 > exp/full/train_speed.jsonl
set -euo pipefail

profile=full
utts=600
pairs=3
num_threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --utts) utts=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --num-threads) num_threads=$2; shift 2 ;;
    -h|--help) echo "Usage: $0 [--profile P] [--utts N] [--pairs N] [--num-threads N]"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; exit 1 ;;
  esac
done
recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
. "${recipe_dir}/local/trainer.sh"
repo=$(cd "${recipe_dir}/../.." && pwd)
data=${recipe_dir}/data/${profile}
exp=${recipe_dir}/exp/${profile}
for f in "${data}/asr_train.jsonl" "${data}/asr_dev.jsonl" "${exp}/asr/model.pt" "${exp}/lang/tokens.txt"; do
  [ -f "${f}" ] || { echo "$0: ${f} not found: run stages 0-3 of run.sh first" >&2; exit 1; }
done
python=${PYTHON:-${repo}/.venv/bin/python}
[ -x "${python}" ] || python=python3
export OMP_NUM_THREADS=${num_threads}
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
head -n "${utts}" "${data}/asr_train.jsonl" > "${work}/train.jsonl"
head -n 20 "${data}/asr_dev.jsonl" > "${work}/dev.jsonl"
for i in $(seq "${pairs}"); do
  for variant in stock ours; do
    extra=()
    [ "${variant}" = stock ] && extra=(++frontend=WavFrontend ++model_conf.fused_attention=false)
    out=${work}/${variant}_${i}
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    recipe_train "${python}" "${repo}/conf" clsr_mini_en.yaml "${exp}/lang" "${work}/train.jsonl" "${work}/dev.jsonl" \
      "${out}" 1 "${num_threads}" ++train_conf.log_interval=5 $(asr_only_overrides) ++model_conf.sampling_ratio=0.0 \
      ++init_param="${exp}/asr/model.pt" "${extra[@]}" > "${out}.log" 2>&1 \
      || { echo "$0: ${variant} run failed:" >&2; tail -5 "${out}.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    "${python}" - "${variant}" "${i}" "${t0}" "${t1}" "${out}.log" <<'PY'
import json, re, sys
variant, i, t0, t1, log = sys.argv[1:]
steps = [float(x) for x in re.findall(r"'total_time': '([0-9.]+)'", open(log).read())]
print(json.dumps({"variant": variant, "pair": int(i), "wall_s": round(float(t1) - float(t0), 1),
                  "logged_steps": len(steps), "mean_step_s": round(sum(steps) / len(steps), 3) if steps else None}))
PY
  done
done
