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
init_paraformer=""     # pretrained Paraformer dir (model.pt, am.mvn) that stage 2 starts from; default
                       #   ${raw_dir}/paraformer-en (stage 0 fetches it); none = the speech branch from nothing
paraformer_hub=iic/speech_paraformer-large-vad-punc_asr_nat-en-16k-common-vocab10020
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
# shellcheck source=utils/clsr_stages.sh
. utils/clsr_stages.sh  # log, stage_done, train, ..., clsr_setup and stages 1-7 (shared by the four recipes)

clsr_setup  # device, OMP_NUM_THREADS, absolute data_dir/exp_dir, asr_valid_jsonl, stage directories
text_encoder=${text_encoder:-${raw_dir}/bge-base-en-v1.5}
init_paraformer=${init_paraformer:-${raw_dir}/paraformer-en}
asr_train_jsonl=${asr_train_jsonl:-${data_dir}/${train_set}.jsonl}

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
      clsr_fetch_paraformer
    fi
    log "stage 0: preparing jsonl (spoken questions, one_to_one=${one_to_one}) in ${data_dir}"
    python local/prepare_slue_sqa5.py --raw-dir "${raw_dir}" --out-dir "${data_dir}" --nj "${nj}" \
      --one-to-one "${one_to_one}" --max-skipped-frac "${max_skipped_frac}" \
      2>&1 | tee "${exp_dir}/logs/stage0_prepare.log"
    date > "${data_dir}/.stage0.done"
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then clsr_stage1_tokens; fi
if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then clsr_stage2_asr_pretrain; fi
if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then clsr_stage3_text_encoder; fi
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then clsr_stage4_joint; fi
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ] && [ "${post_train}" = true ]; then clsr_stage5_post_train; fi
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then clsr_stage6_evaluate slue_sqa5 --question-kind speech; fi
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then clsr_stage7_export; fi

log "done (stages ${stage}..${stop_stage})"
