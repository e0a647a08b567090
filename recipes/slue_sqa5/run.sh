#!/usr/bin/env bash
# CLSR on SLUE-SQA-5 (spoken questions -> spoken Wikipedia passages; both sides are speech).
#
#   0  download SLUE-SQA-5 (resumable) + prepare jsonl (question_source/question_target fields)
#   1  CMVN (am.mvn) and token list (the text encoder's WordPiece vocabulary)
#   2  ASR pre-training of the Paraformer branch
#   3  text-encoder pre-training on clean (transcript) question-passage pairs
#   4  joint CLSR training (text encoder frozen), initialised from stage 2
#   5  post-training: speech branch frozen, text encoder trained
#   6  evaluation (recall@k both directions, WER) on ${test_sets}
#   7  export a self-contained model directory
#
# Every stage leaves ${exp_dir}/.stageN.done (stage 0: ${data_dir}/.stage0.done); a rerun skips
# finished stages (--force true redoes them). Logs: ${exp_dir}/logs/. See README.md.

# ---- options (any of them can be set on the command line: --name value) ----
stage=0
stop_stage=7
ngpu=1                 # GPUs for training; >1 uses torchrun; 0 trains on the CPU
nj=8                   # threads reading audio headers in stage 0
device=cuda            # cuda or cpu (set automatically to cpu when ngpu=0)
master_port=12357
download=true          # false: use what is already in ${raw_dir} (same layout, e.g. a copy)
remove_archives=false  # delete slue-sqa5.zip after unpacking
base_url=https://huggingface.co/datasets/asapp/slue-phase-2/resolve/main   # fills {base_url} in local/downloads.tsv
raw_dir=downloads      # holds slue-sqa5/ (layout in local/prepare_slue_sqa5.py)
data_dir=data          # prepared jsonl, am.mvn, tokens.txt
exp_dir=exp
one_to_one=false       # the paper uses every SLUE-SQA-5 question (46,186 / 1,939 / 2,382)
max_skipped_frac=1.0   # fail stage 0 when more of a split than this lacks usable audio
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
config=${repo_root}/conf/clsr_bge_base_en.yaml       # joint CLSR model (stages 4, 5)
asr_config=""          # stage 2 model config; default: ${config} with ASR losses only (conf/asr_pretrain.overrides)
text_encoder=""        # local BGE folder; default ${raw_dir}/bge-base-en-v1.5 (stage 0 fetches it)
text_encoder_hub=BAAI/bge-base-en-v1.5
init_paraformer=""     # optional Paraformer model dir whose model.pt initialises stage 2
asr_train_jsonl=""     # stage 2 data (default: ${data_dir}/train.jsonl); paper: LibriSpeech 460 h,
asr_valid_jsonl=""     #   see ../librisqa (--prepare_librispeech_asr true) for that jsonl
subset_tokens=false    # true: token list restricted to tokens seen in the training targets
post_train=true        # run stage 5 (the paper reports a small gain)
checkpoint=model.pt    # checkpoint of the final training stage that stages 6-7 export
train_set=train        # SLUE's fine-tune split
valid_set="dev"
test_sets="dev test"
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
text_encoder=${text_encoder:-${raw_dir}/bge-base-en-v1.5}
asr_train_jsonl=${asr_train_jsonl:-${data_dir}/${train_set}.jsonl}
asr_valid_jsonl=${asr_valid_jsonl:-${data_dir}/${valid_set}.jsonl}
asr_dir=${exp_dir}/asr_pretrain
te_dir=${exp_dir}/text_encoder
clsr_dir=${exp_dir}/clsr
post_dir=${exp_dir}/clsr_post

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if ! stage_done 0 "${data_dir}/.stage0.done"; then
    if [ "${download}" = true ]; then
      log "stage 0: downloading SLUE-SQA-5 into ${raw_dir}"
      opts=()
      [ "${remove_archives}" = true ] && opts+=(--remove-archives)
      python utils/download_manifest.py local/downloads.tsv --raw-dir "${raw_dir}" \
        --base-url "${base_url}" "${opts[@]}" 2>&1 | tee "${exp_dir}/logs/stage0_download.log"
      if [ ! -d "${text_encoder}" ]; then
        log "stage 0: fetching ${text_encoder_hub} into ${text_encoder}"
        modelscope download "${text_encoder_hub}" --local-dir "${text_encoder}" \
          2>&1 | tee -a "${exp_dir}/logs/stage0_download.log"
      fi
    fi
    log "stage 0: preparing jsonl (spoken questions, one_to_one=${one_to_one}) in ${data_dir}"
    python local/prepare_slue_sqa5.py --raw-dir "${raw_dir}" --out-dir "${data_dir}" --nj "${nj}" \
      --one-to-one "${one_to_one}" --max-skipped-frac "${max_skipped_frac}" \
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
        --command "bash recipes/slue_sqa5/run.sh --stage 6 --stop_stage 6" \
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
