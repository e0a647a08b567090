# shellcheck shell=bash
# Stages 1-7 of the full CLSR recipes (spoken_squad, librisqa, slue_sqa5, drcd), shared so the
# four run.sh files keep only their options, their stage 0 and their differences.
#
# Sourced by run.sh after its options, `. utils/parse_options.sh` and `set -euo pipefail`.
# The functions read run.sh's variables (stage/option names as in run.sh); run.sh calls
# clsr_setup once, sets its dataset-specific defaults (text_encoder, asr_train_jsonl), then
# calls one clsr_stageN_* function per stage guard.
# shellcheck disable=SC2154  # every variable below is assigned in the sourcing run.sh

log() {  # the file and line of the call, so messages from here name this file, not run.sh
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"
}

stage_done() {  # stage_done N MARKER: true (and logs) when the stage finished before
  if [ "${force}" != true ] && [ -f "$2" ]; then
    log "stage $1: already done ($2); skipping (--force true to redo)"
    return 0
  fi
  return 1
}

args_from() {  # one argument per non-comment line of a recipe conf file
  grep -v '^[[:space:]]*#' "$1" | sed '/^[[:space:]]*$/d'
}

need_dir() {
  [ -d "$1" ] || { log "error: $2: $1 not found"; exit 1; }
}

need_paraformer() {  # the pretrained Paraformer of --init_paraformer, or one line saying what is missing
  local f
  for f in model.pt am.mvn; do
    [ -f "${init_paraformer}/${f}" ] || { log "error: --init_paraformer ${init_paraformer}: no ${f} there" \
      "(stage 0 fetches ${paraformer_hub} with --download true; --init_paraformer none trains from nothing)"; exit 1; }
  done
}

clsr_fetch_paraformer() {  # stage 0: the pretrained Paraformer stage 2 starts from, unless it is there or none
  [ "${init_paraformer}" = none ] && return 0
  [ -f "${init_paraformer}/model.pt" ] && [ -f "${init_paraformer}/am.mvn" ] && return 0
  log "stage 0: fetching ${paraformer_hub} into ${init_paraformer}"
  modelscope download "${paraformer_hub}" --local-dir "${init_paraformer}" \
    2>&1 | tee -a "${exp_dir}/logs/stage0_download.log"
  need_paraformer
}

train() {  # train LOG hydra-args... : the package's train launcher, torchrun for several GPUs
  local log_file=$1
  shift
  log "training; log: ${log_file}"
  set -- "$@" hydra.run.dir="${exp_dir}/hydra/$(basename "${log_file}" .log)"  # not ./outputs/
  if [ "${ngpu}" -gt 1 ]; then
    torchrun --nnodes 1 --nproc_per_node "${ngpu}" --master_port "${master_port}" \
      -m funasr_clsr.bin.train "$@" ++device="${device}" 2>&1 | tee "${log_file}"
  else
    python -m funasr_clsr.bin.train "$@" ++device="${device}" 2>&1 | tee "${log_file}"
  fi
}

clsr_setup() {  # defaults and directories every recipe derives the same way
  [ "${ngpu}" -gt 0 ] || device=cpu
  asr_config=${asr_config:-${config}}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  mkdir -p "${data_dir}" "${exp_dir}/logs"
  data_dir=$(cd "${data_dir}" && pwd)
  exp_dir=$(cd "${exp_dir}" && pwd)
  asr_valid_jsonl=${asr_valid_jsonl:-${data_dir}/${valid_set}.jsonl}
  asr_dir=${exp_dir}/asr_pretrain
  te_dir=${exp_dir}/text_encoder
  clsr_dir=${exp_dir}/clsr
  post_dir=${exp_dir}/clsr_post
}

clsr_text_encoder() {  # the text encoder CLSR uses: the stage-3 one when it exists, else the downloaded BGE
  if [ -f "${exp_dir}/.stage3.done" ]; then
    echo "${te_dir}"
  else
    echo "${text_encoder}"
  fi
}

clsr_final_dir() {  # the training directory stages 6-7 export: post-training's when it ran
  if [ "${post_train}" = true ] && [ -f "${exp_dir}/.stage5.done" ]; then
    echo "${post_dir}"
  else
    echo "${clsr_dir}"
  fi
}

clsr_stage1_tokens() {
  stage_done 1 "${exp_dir}/.stage1.done" && return 0
  need_dir "${text_encoder}" "--text_encoder (a local BGE folder)"
  log "stage 1: CMVN and token list"
  if [ "${init_paraformer}" != none ]; then
    # a pretrained encoder expects the feature statistics it was trained with, not this corpus's
    need_paraformer
    cp "${init_paraformer}/am.mvn" "${data_dir}/am.mvn"
    log "stage 1: CMVN from the pretrained Paraformer (${init_paraformer}/am.mvn)" | tee "${exp_dir}/logs/stage1_cmvn.log"
  else
    python -m funasr_clsr.bin.compute_cmvn --jsonl "${asr_train_jsonl}" --out "${data_dir}/am.mvn" \
      2>&1 | tee "${exp_dir}/logs/stage1_cmvn.log"
  fi
  local subset=()
  [ "${subset_tokens}" = true ] && subset=(--subset-from "${data_dir}/${train_set}.jsonl")
  python -m funasr_clsr.bin.make_tokens --text-encoder "${text_encoder}" --out "${data_dir}/tokens.txt" \
    "${subset[@]}" 2>&1 | tee "${exp_dir}/logs/stage1_tokens.log"
  date > "${exp_dir}/.stage1.done"
}

clsr_stage2_asr_pretrain() {
  stage_done 2 "${exp_dir}/.stage2.done" && return 0
  log "stage 2: ASR pre-training on ${asr_train_jsonl}"
  local init=() extra=() asr_conf_dir
  if [ "${init_paraformer}" != none ]; then
    # matching tensors load; the vocabulary-dependent ones (decoder embedding and output layer, CTC head)
    # are re-initialised by FunASR's ignore_init_mismatch and listed in the training log
    need_paraformer
    init=(++init_param="${init_paraformer}/model.pt")
  fi
  asr_conf_dir=$(cd "$(dirname "${asr_config}")" && pwd)
  mapfile -t extra < <(args_from conf/asr_pretrain.overrides)
  train "${exp_dir}/logs/stage2_asr_pretrain.log" \
    --config-path "${asr_conf_dir}" --config-name "$(basename "${asr_config}")" \
    ++train_data_set_list="${asr_train_jsonl}" ++valid_data_set_list="${asr_valid_jsonl}" \
    ++tokenizer_conf.token_list="${data_dir}/tokens.txt" ++frontend_conf.cmvn_file="${data_dir}/am.mvn" \
    ++output_dir="${asr_dir}" "${init[@]}" "${extra[@]}"
  date > "${exp_dir}/.stage2.done"
}

clsr_stage3_text_encoder() {
  stage_done 3 "${exp_dir}/.stage3.done" && return 0
  need_dir "${text_encoder}" "--text_encoder (a local BGE folder)"
  log "stage 3: text-encoder pre-training on ${data_dir}/${train_set}.pairs.jsonl"
  local extra=()
  mapfile -t extra < <(args_from conf/train_text_encoder.conf)
  python -m funasr_clsr.bin.train_text_encoder --pairs "${data_dir}/${train_set}.pairs.jsonl" \
    --text-encoder "${text_encoder}" --out "${te_dir}" "${extra[@]}" \
    2>&1 | tee "${exp_dir}/logs/stage3_text_encoder.log"
  date > "${exp_dir}/.stage3.done"
}

# clsr_joint_train LOG OVERRIDES hydra-args... : stages 4 and 5, which differ only in their
# overrides file and the arguments after the shared data/model ones (output_dir, init, freezing)
clsr_joint_train() {
  local log_file=$1 overrides=$2 clsr_conf_dir te extra=()
  shift 2
  te=$(clsr_text_encoder)
  clsr_conf_dir=$(cd "$(dirname "${config}")" && pwd)
  mapfile -t extra < <(args_from "${overrides}")
  train "${log_file}" \
    --config-path "${clsr_conf_dir}" --config-name "$(basename "${config}")" \
    ++train_data_set_list="${data_dir}/${train_set}.jsonl" ++valid_data_set_list="${data_dir}/${valid_set}.jsonl" \
    ++tokenizer_conf.token_list="${data_dir}/tokens.txt" ++frontend_conf.cmvn_file="${data_dir}/am.mvn" \
    ++model_conf.text_encoder_conf.path="${te}" \
    "$@" "${extra[@]}"
}

clsr_stage4_joint() {
  stage_done 4 "${exp_dir}/.stage4.done" && return 0
  log "stage 4: joint CLSR training (text encoder $(clsr_text_encoder), frozen)"
  local init=()
  [ -f "${asr_dir}/model.pt" ] && init=(++init_param="${asr_dir}/model.pt")
  clsr_joint_train "${exp_dir}/logs/stage4_clsr.log" conf/clsr_train.overrides \
    ++output_dir="${clsr_dir}" "${init[@]}"
  date > "${exp_dir}/.stage4.done"
}

clsr_stage5_post_train() {
  stage_done 5 "${exp_dir}/.stage5.done" && return 0
  log "stage 5: post-training the text encoder, speech branch frozen"
  clsr_joint_train "${exp_dir}/logs/stage5_post_train.log" conf/post_train.overrides \
    ++init_param="${clsr_dir}/model.pt" \
    ++model_conf.freeze_speech_branch=true ++model_conf.freeze_text_encoder=false \
    ++output_dir="${post_dir}"
  date > "${exp_dir}/.stage5.done"
}

# clsr_stage6_evaluate RECIPE [evaluate-args...]: RECIPE names recipes/RECIPE/run.sh in the
# results' command line; extra arguments (e.g. --question-kind speech) go to funasr_clsr.bin.evaluate
clsr_stage6_evaluate() {
  local recipe=$1 final_dir test_set
  shift
  stage_done 6 "${exp_dir}/.stage6.done" && return 0
  final_dir=$(clsr_final_dir)
  # evaluate an export of the final checkpoint: a training directory's config.yaml still names
  # its initialisation (init_param), which FunASR would load instead of the trained model.pt
  log "stage 6: exporting ${final_dir} for evaluation"
  python -m funasr_clsr.bin.export --exp "${final_dir}" --checkpoint "${checkpoint}" --out "${final_dir}/model" \
    --cmvn "${data_dir}/am.mvn" 2>&1 | tee "${exp_dir}/logs/stage6_export.log"
  for test_set in ${test_sets}; do
    log "stage 6: evaluating ${final_dir}/model on ${test_set}"
    python -m funasr_clsr.bin.evaluate --mode embed --model "${final_dir}/model" \
      --jsonl "${data_dir}/${test_set}.jsonl" --results "${exp_dir}/results_${test_set}.json" --system clsr "$@" \
      --command "bash recipes/${recipe}/run.sh --stage 6 --stop_stage 6" \
      2>&1 | tee "${exp_dir}/logs/stage6_eval_${test_set}.log"
  done
  date > "${exp_dir}/.stage6.done"
}

clsr_stage7_export() {
  stage_done 7 "${exp_dir}/.stage7.done" && return 0
  local final_dir
  final_dir=$(clsr_final_dir)
  log "stage 7: exporting ${final_dir} to ${exp_dir}/model"
  python -m funasr_clsr.bin.export --exp "${final_dir}" --checkpoint "${checkpoint}" --out "${exp_dir}/model" \
    --cmvn "${data_dir}/am.mvn" 2>&1 | tee "${exp_dir}/logs/stage7_export.log"
  date > "${exp_dir}/.stage7.done"
}
