# shellcheck shell=bash
# How this recipe calls the trainer (python -m funasr_clsr.bin.train, FunASR's train semantics),
# sourced by run.sh, local/joint_probe.sh and local/train_speed.sh so the three spell it once.

# recipe_train PYTHON CONF_DIR CONFIG LANG_DIR TRAIN_JSONL VALID_JSONL OUT_DIR EPOCHS NCPU [++override ...]
# LANG_DIR holds stage 2's tokens.txt (and am.mvn for the SAN-M branch); paths must be absolute (Hydra changes directory).
recipe_train() {
  local python=$1 conf_dir=$2 config=$3 lang=$4 train_jsonl=$5 valid_jsonl=$6 out=$7 epochs=$8 ncpu=$9
  shift 9
  local cmvn=()  # Whisper's frontend needs none (stage 2 writes no am.mvn then)
  [ -f "${lang}/am.mvn" ] && cmvn=(++frontend_conf.cmvn_file="${lang}/am.mvn")
  "${python}" -m funasr_clsr.bin.train --config-path "${conf_dir}" --config-name "${config}" \
    ++tokenizer_conf.token_list="${lang}/tokens.txt" "${cmvn[@]}" \
    ++train_data_set_list="${train_jsonl}" ++valid_data_set_list="${valid_jsonl}" \
    ++output_dir="${out}" ++train_conf.max_epoch="${epochs}" ++ncpu="${ncpu}" "$@"
}

# The speech branch trained for ASR alone (stage 3, the same-budget cascade): no text encoder, no InfoNCE.
asr_only_overrides() {
  echo "++model_conf.text_encoder_conf=null ++model_conf.nce_weight=0"
}
