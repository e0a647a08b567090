#!/usr/bin/env bash
# CLSR on DRCD* (Traditional Chinese; spoken questions -> spoken sentences).
# Training speech is synthesised from DRCD's training set with a TTS command (--tts_cmd);
# the test set is ODSQA, DRCD dev read aloud by 20 speakers.
#
#   0  download DRCD + ODSQA (resumable, checksums where known), TTS, prepare jsonl
#   1  CMVN (am.mvn) and token list (bge-base-zh's vocabulary; targets are characters)
#   2  ASR pre-training of the Paraformer branch
#   3  text-encoder pre-training on clean question-sentence pairs
#   4  joint CLSR training (text encoder frozen), initialised from stage 2
#   5  post-training: speech branch frozen, text encoder trained
#   6  evaluation (recall@k both directions, CER) on ${test_sets}
#   7  export a self-contained model directory
#
# Every stage leaves ${exp_dir}/.stageN.done (stage 0: ${data_dir}/.stage0.done); a rerun skips
# finished stages (--force true redoes them). Logs: ${exp_dir}/logs/. See README.md.

# ---- options (any of them can be set on the command line: --name value) ----
stage=0
stop_stage=7
ngpu=1                 # GPUs for training; >1 uses torchrun; 0 trains on the CPU
nj=8                   # parallel TTS processes in stage 0
device=cuda            # cuda or cpu (set automatically to cpu when ngpu=0)
master_port=12358
download=true          # false: use what is already in ${raw_dir} (same layout, e.g. a copy)
download_audio=true    # false: skip the ODSQA audio archive
remove_archives=false  # delete the ODSQA audio archive after unpacking
base_url=""            # replaces {base_url} in local/downloads.tsv (mirrors)
raw_dir=downloads      # DRCD_training.json DRCD_dev.json ODSQA_spokenq_test-v1.1.json odsqa_audio/
data_dir=data          # prepared jsonl, am.mvn, tokens.txt
exp_dir=exp
tts_cmd=""             # REQUIRED for a fresh run: TTS command template with {text_file} (or {text}) and {wav}
tts_dir=""             # synthesised training speech; default ${raw_dir}/drcd_tts
context_unit=sentence  # sentence (paper's pair counts) or paragraph
one_to_one=true        # one question per context ("DRCD*")
odsqa_audio_dir=""     # default ${raw_dir}/odsqa_audio
odsqa_context_name="{pid}_{k}"   # ODSQA sentence recording name (ASSUMED layout, see README.md)
odsqa_paragraph_name="{pid}"     # ODSQA paragraph recording name (--context_unit paragraph)
odsqa_question_name="{qid}"      # ODSQA question recording name
max_skipped_frac=1.0   # fail stage 0 when more of a split than this lacks usable audio
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
config=${repo_root}/conf/clsr_bge_base_zh.yaml       # joint CLSR model (stages 4, 5)
asr_config=""          # stage 2 model config; default: ${config} with ASR losses only (conf/asr_pretrain.overrides)
text_encoder=""        # local BGE folder; default ${raw_dir}/bge-base-zh-v1.5 (stage 0 fetches it)
text_encoder_hub=BAAI/bge-base-zh-v1.5
init_paraformer=""     # optional Paraformer model dir whose model.pt initialises stage 2
asr_train_jsonl=""     # stage 2 data (default: ${data_dir}/train.jsonl)
asr_valid_jsonl=""     # stage 2 validation (default: ${data_dir}/${valid_set}.jsonl)
subset_tokens=false    # true: token list restricted to tokens seen in the training targets
post_train=true        # run stage 5 (the paper reports a small gain)
checkpoint=model.pt    # checkpoint of the final training stage that stages 6-7 export
train_set=train
valid_set="test"       # the paper's validation split = ODSQA (1,425 pairs)
test_sets="test"
force=false

help_message="Usage: $0 [--stage N] [--stop_stage N] [--ngpu N] [--download true|false] [--raw_dir DIR]
       [--data_dir DIR] [--exp_dir DIR] [--config YAML] [--text_encoder DIR] [--init_paraformer DIR] ...
Options are the variables at the top of run.sh; see README.md."

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
. utils/parse_options.sh || exit 1
set -euo pipefail

log() {
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"
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

[ "${ngpu}" -gt 0 ] || device=cpu
asr_config=${asr_config:-${config}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "${data_dir}" "${exp_dir}/logs"
data_dir=$(cd "${data_dir}" && pwd)
exp_dir=$(cd "${exp_dir}" && pwd)
text_encoder=${text_encoder:-${raw_dir}/bge-base-zh-v1.5}
tts_dir=${tts_dir:-${raw_dir}/drcd_tts}
asr_train_jsonl=${asr_train_jsonl:-${data_dir}/${train_set}.jsonl}
asr_valid_jsonl=${asr_valid_jsonl:-${data_dir}/${valid_set}.jsonl}
asr_dir=${exp_dir}/asr_pretrain
te_dir=${exp_dir}/text_encoder
clsr_dir=${exp_dir}/clsr
post_dir=${exp_dir}/clsr_post

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if ! stage_done 0 "${data_dir}/.stage0.done"; then
    if [ "${download}" = true ]; then
      log "stage 0: downloading DRCD and ODSQA into ${raw_dir}"
      skip=""
      [ "${download_audio}" = true ] || skip="odsqa_audio"
      opts=()
      [ "${remove_archives}" = true ] && opts+=(--remove-archives)
      python utils/download_manifest.py local/downloads.tsv --raw-dir "${raw_dir}" --skip "${skip}" \
        --base-url "${base_url}" "${opts[@]}" 2>&1 | tee "${exp_dir}/logs/stage0_download.log"
      if [ ! -d "${text_encoder}" ]; then
        log "stage 0: fetching ${text_encoder_hub} into ${text_encoder}"
        modelscope download "${text_encoder_hub}" --local-dir "${text_encoder}" \
          2>&1 | tee -a "${exp_dir}/logs/stage0_download.log"
      fi
    fi
    log "stage 0: TTS for the training pairs (${tts_dir}) and jsonl in ${data_dir}"
    python local/prepare_drcd.py all --raw-dir "${raw_dir}" --out-dir "${data_dir}" \
      --tts-dir "${tts_dir}" --tts-cmd "${tts_cmd}" --nj "${nj}" --odsqa-audio-dir "${odsqa_audio_dir}" \
      --train-split "${train_set}" --context-unit "${context_unit}" --one-to-one "${one_to_one}" \
      --context-name "${odsqa_context_name}" --paragraph-name "${odsqa_paragraph_name}" \
      --question-name "${odsqa_question_name}" --max-skipped-frac "${max_skipped_frac}" \
      2>&1 | tee "${exp_dir}/logs/stage0_prepare.log"
    date > "${data_dir}/.stage0.done"
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  if ! stage_done 1 "${exp_dir}/.stage1.done"; then
    need_dir "${text_encoder}" "--text_encoder (a local BGE folder)"
    log "stage 1: CMVN and token list"
    python -m funasr_clsr.bin.compute_cmvn --jsonl "${asr_train_jsonl}" --out "${data_dir}/am.mvn" \
      2>&1 | tee "${exp_dir}/logs/stage1_cmvn.log"
    subset=()
    [ "${subset_tokens}" = true ] && subset=(--subset-from "${data_dir}/${train_set}.jsonl")
    python -m funasr_clsr.bin.make_tokens --text-encoder "${text_encoder}" --out "${data_dir}/tokens.txt" \
      "${subset[@]}" 2>&1 | tee "${exp_dir}/logs/stage1_tokens.log"
    date > "${exp_dir}/.stage1.done"
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  if ! stage_done 2 "${exp_dir}/.stage2.done"; then
    log "stage 2: ASR pre-training on ${asr_train_jsonl}"
    init=()
    [ -n "${init_paraformer}" ] && init=(++init_param="${init_paraformer}/model.pt")
    asr_conf_dir=$(cd "$(dirname "${asr_config}")" && pwd)
    mapfile -t extra < <(args_from conf/asr_pretrain.overrides)
    train "${exp_dir}/logs/stage2_asr_pretrain.log" \
      --config-path "${asr_conf_dir}" --config-name "$(basename "${asr_config}")" \
      ++train_data_set_list="${asr_train_jsonl}" ++valid_data_set_list="${asr_valid_jsonl}" \
      ++tokenizer_conf.token_list="${data_dir}/tokens.txt" ++frontend_conf.cmvn_file="${data_dir}/am.mvn" \
      ++output_dir="${asr_dir}" "${init[@]}" "${extra[@]}"
    date > "${exp_dir}/.stage2.done"
  fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  if ! stage_done 3 "${exp_dir}/.stage3.done"; then
    need_dir "${text_encoder}" "--text_encoder (a local BGE folder)"
    log "stage 3: text-encoder pre-training on ${data_dir}/${train_set}.pairs.jsonl"
    mapfile -t extra < <(args_from conf/train_text_encoder.conf)
    python -m funasr_clsr.bin.train_text_encoder --pairs "${data_dir}/${train_set}.pairs.jsonl" \
      --text-encoder "${text_encoder}" --out "${te_dir}" "${extra[@]}" \
      2>&1 | tee "${exp_dir}/logs/stage3_text_encoder.log"
    date > "${exp_dir}/.stage3.done"
  fi
fi

# the text encoder CLSR uses: the stage-3 one when it exists, else the downloaded BGE
clsr_text_encoder=${text_encoder}
[ -f "${exp_dir}/.stage3.done" ] && clsr_text_encoder=${te_dir}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  if ! stage_done 4 "${exp_dir}/.stage4.done"; then
    log "stage 4: joint CLSR training (text encoder ${clsr_text_encoder}, frozen)"
    init=()
    [ -f "${asr_dir}/model.pt" ] && init=(++init_param="${asr_dir}/model.pt")
    clsr_conf_dir=$(cd "$(dirname "${config}")" && pwd)
    mapfile -t extra < <(args_from conf/clsr_train.overrides)
    train "${exp_dir}/logs/stage4_clsr.log" \
      --config-path "${clsr_conf_dir}" --config-name "$(basename "${config}")" \
      ++train_data_set_list="${data_dir}/${train_set}.jsonl" ++valid_data_set_list="${data_dir}/${valid_set}.jsonl" \
      ++tokenizer_conf.token_list="${data_dir}/tokens.txt" ++frontend_conf.cmvn_file="${data_dir}/am.mvn" \
      ++model_conf.text_encoder_conf.path="${clsr_text_encoder}" \
      ++output_dir="${clsr_dir}" "${init[@]}" "${extra[@]}"
    date > "${exp_dir}/.stage4.done"
  fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ] && [ "${post_train}" = true ]; then
  if ! stage_done 5 "${exp_dir}/.stage5.done"; then
    log "stage 5: post-training the text encoder, speech branch frozen"
    clsr_conf_dir=$(cd "$(dirname "${config}")" && pwd)
    mapfile -t extra < <(args_from conf/post_train.overrides)
    train "${exp_dir}/logs/stage5_post_train.log" \
      --config-path "${clsr_conf_dir}" --config-name "$(basename "${config}")" \
      ++train_data_set_list="${data_dir}/${train_set}.jsonl" ++valid_data_set_list="${data_dir}/${valid_set}.jsonl" \
      ++tokenizer_conf.token_list="${data_dir}/tokens.txt" ++frontend_conf.cmvn_file="${data_dir}/am.mvn" \
      ++model_conf.text_encoder_conf.path="${clsr_text_encoder}" \
      ++init_param="${clsr_dir}/model.pt" \
      ++model_conf.freeze_speech_branch=true ++model_conf.freeze_text_encoder=false \
      ++output_dir="${post_dir}" "${extra[@]}"
    date > "${exp_dir}/.stage5.done"
  fi
fi

final_dir=${clsr_dir}
[ "${post_train}" = true ] && [ -f "${exp_dir}/.stage5.done" ] && final_dir=${post_dir}

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  if ! stage_done 6 "${exp_dir}/.stage6.done"; then
    # evaluate an export of the final checkpoint: a training directory's config.yaml still names
    # its initialisation (init_param), which FunASR would load instead of the trained model.pt
    log "stage 6: exporting ${final_dir} for evaluation"
    python -m funasr_clsr.bin.export --exp "${final_dir}" --checkpoint "${checkpoint}" --out "${final_dir}/model" \
      --cmvn "${data_dir}/am.mvn" 2>&1 | tee "${exp_dir}/logs/stage6_export.log"
    for test_set in ${test_sets}; do
      log "stage 6: evaluating ${final_dir}/model on ${test_set}"
      python -m funasr_clsr.bin.evaluate --mode embed --model "${final_dir}/model" \
        --jsonl "${data_dir}/${test_set}.jsonl" --results "${exp_dir}/results_${test_set}.json" --system clsr --question-kind speech \
        --command "bash recipes/drcd/run.sh --stage 6 --stop_stage 6" \
        2>&1 | tee "${exp_dir}/logs/stage6_eval_${test_set}.log"
    done
    date > "${exp_dir}/.stage6.done"
  fi
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  if ! stage_done 7 "${exp_dir}/.stage7.done"; then
    log "stage 7: exporting ${final_dir} to ${exp_dir}/model"
    python -m funasr_clsr.bin.export --exp "${final_dir}" --checkpoint "${checkpoint}" --out "${exp_dir}/model" \
      --cmvn "${data_dir}/am.mvn" 2>&1 | tee "${exp_dir}/logs/stage7_export.log"
    date > "${exp_dir}/.stage7.done"
  fi
fi

log "done (stages ${stage}..${stop_stage})"
