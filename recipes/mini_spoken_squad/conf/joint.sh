# shellcheck shell=bash
# Stage-4 (joint training) defaults, sourced by run.sh before option parsing (so --joint-lr and the
# other --joint-* options override them) and by local/joint_probe.sh, so a probe trains exactly what
# stage 4 trains. The measurements behind each value: README.md, "Joint stage".
joint_lr=5e-5         # the paper's Adam 5e-5; 1.5e-4 and 5e-4 made the stage-3 ASR worse within 120 steps
joint_warmup=50       # warm-up steps of the joint stage's fresh optimiser
joint_batch=18000     # padded 10 ms frames per batch (3 min of audio). InfoNCE's negatives are the
                      # batch's other pairs (plus the banks): at 60 s (1-3 contexts) it had almost none
joint_nce_weight=1.0  # CLSR's loss weights in stage 4: ASR weight = 1 - nce - mae (the paper: 1/3 each).
joint_mae_weight=0.0  # On this recipe's 20-60 s contexts the ASR loss pulled the stage-3 ASR from WER 68
                      # to 72-86 and left retrieval at its starting point; InfoNCE alone kept WER 68 and
                      # lifted R@1 7.7 -> 10.7 on the probe subset. ASR/MAE stay on for the ASR-only
                      # cascade and for clsr_no_pretrain, which have nothing else to learn from.

# A positive decimal such as 0.0002 or 2e-4 (what the trainer's ++ overrides take as a number).
positive_number_re='^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$'
# One-line refusals of --joint-* values the trainer would otherwise get as strings or out of range;
# $1 = the script name for the message. Returns 1 after printing the first problem.
check_joint_options() {
  local who=$1
  [[ "${joint_lr}" =~ ${positive_number_re} ]] ||
    { echo "${who}: --joint-lr ${joint_lr}: expected a positive number such as 5e-5" >&2; return 1; }
  [[ "${joint_warmup}" =~ ^[0-9]+$ ]] ||
    { echo "${who}: --joint-warmup ${joint_warmup}: expected a whole number of steps" >&2; return 1; }
  [[ "${joint_batch}" =~ ^[1-9][0-9]*$ ]] ||
    { echo "${who}: --joint-batch ${joint_batch}: expected a positive whole number of 10 ms frames" >&2; return 1; }
  local w
  for w in nce mae; do
    local v="joint_${w}_weight"
    [[ "${!v}" =~ ${positive_number_re} ]] ||
      { echo "${who}: --joint-${w}-weight ${!v}: expected a number in [0, 1]" >&2; return 1; }
  done
  awk -v n="${joint_nce_weight}" -v m="${joint_mae_weight}" 'BEGIN { exit !(n + m <= 1) }' ||
    { echo "${who}: --joint-nce-weight ${joint_nce_weight} + --joint-mae-weight ${joint_mae_weight} is over 1 (the ASR weight is 1 minus both)" >&2; return 1; }
}

# The trainer's ++overrides of a stage-4 run; $1 = the Paraformer sampler ratio.
joint_overrides() {
  echo "++optim_conf.lr=${joint_lr} ++scheduler_conf.warmup_steps=${joint_warmup} ++model_conf.sampling_ratio=$1" \
    "$(joint_batch_overrides)"
}
# The batches every stage-4 run shares (the InfoNCE negatives are the batch).
joint_batch_overrides() {
  echo "++dataset_conf.batch_size=${joint_batch} ++dataset_conf.max_source_length=6000"
}
# The dual encoders on the frozen Whisper encoder (parabge, speechdpr, clap) train only small heads: their
# config's learning rate (not the joint stage's 5e-5, tuned for a pretrained decoder), a short warm-up.
dual_overrides() {
  echo "++scheduler_conf.warmup_steps=50 $(joint_batch_overrides)"
}
# CLSR's stage-4 loss weights (the CLSR rows trained from the stage-3 checkpoint).
joint_loss_overrides() {
  echo "++model_conf.nce_weight=${joint_nce_weight} ++model_conf.mae_weight=${joint_mae_weight}"
}
