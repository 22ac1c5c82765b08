#!/usr/bin/env bash
# PEFT loads burnish's LoRA adapters: trains a few LoRA DPO steps with burnish on the tiny llama,
# gpt2 and qwen3 fixtures, loads each `final/adapter` with Hugging Face PEFT onto the base model,
# and prints the largest logit difference against burnish's merged export (and how far the
# adapter moved the logits). Not part of CI: PEFT, transformers and PyTorch are several GB.
#
#   scripts/peft_check.sh            # VENV (default ../trl-venv) gets `peft` installed if missing
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-../trl-venv}
"$venv/bin/python" -c "import peft" 2>/dev/null || "$venv/bin/pip" install -q peft
cargo build --release -q -p burnish-cli
fixtures=$(pwd)/crates/burnish-model/tests/fixtures/hf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
subjects=("The film" "This book" "The meal" "Our trip")
for i in $(seq 0 31); do
  printf '{"prompt": "%s #%d", "chosen": " was great.", "rejected": " was awful."}\n' \
    "${subjects[$((i % 4))]}" "$i"
done > "$work/pairs.jsonl"
target/release/burnish convert --from trl --input "$work/pairs.jsonl" --output "$work/pairs.parquet" >/dev/null
for m in llama gpt2 qwen3; do
  modules='"all-linear"'
  [ "$m" = gpt2 ] && modules='["c_attn", "c_proj", "c_fc"]'
  cat > "$work/$m.toml" <<TOML
[model]
path = "$fixtures/$m"
[data]
train = "$work/pairs.parquet"
max_length = 40
max_prompt_length = 20
eval_fraction = 0.0
[optimizer]
lr = 1e-2
[train]
max_steps = 5
batch_size = 4
checkpoint_every = 0
output_dir = "$work/run-$m"
[loss]
loss_type = "sigmoid"
[lora]
r = 4
alpha = 8
target_modules = $modules
TOML
  target/release/burnish train dpo --config "$work/$m.toml" --quiet >/dev/null
done
"$venv/bin/python" scripts/peft_check.py "$fixtures" "$work" llama gpt2 qwen3 2>/dev/null | grep '^{'
