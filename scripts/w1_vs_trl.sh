#!/usr/bin/env bash
# W1 side by side: burnish's DPO step (cargo bench --bench w1_dpo, bf16 and fp32) and TRL's
# reference script (shared/bench/trl_dpo_bench.py, TRL + PyTorch on the CPU, fp32 and its default
# bf16) on the same machine, one after the other, then burnish against TRL's best. Not part of
# CI: TRL and PyTorch are several GB.
#
#   scripts/w1_vs_trl.sh [STEPS]          # default 6 steps each: the same 24 pairs
#
# Environment: VENV (default ../trl-venv, created and filled from PyPI when missing),
# BENCH_DIR (default ../shared/bench, where trl_dpo_bench.py and ../assets live),
# OUT (default runs/bench, where the JSON lines go).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
venv=${VENV:-../trl-venv}
bench_dir=${BENCH_DIR:-../shared/bench}
out=${OUT:-runs/bench}
mkdir -p "$out"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers trl datasets accelerate
fi
# Absolute paths: the TRL script runs from its own folder.
venv=$(cd "$venv" && pwd)
out=$(cd "$out" && pwd)

cargo bench --bench w1_dpo --no-run
for precision in bf16 fp32; do
  echo "== burnish (gpt2, $steps steps, $precision)"
  cargo bench -q --bench w1_dpo -- --model gpt2 --steps "$steps" --precision "$precision" | tail -1 \
    | tee "$out/burnish_w1_$precision.json"
done
# TRL with the reference precomputed (its fastest mode), in fp32 and in its default bf16.
for precision in fp32 bf16; do
  echo "== TRL (precompute, $precision)"
  arg=$([ "$precision" = bf16 ] && echo bf16 || echo "")
  # stderr keeps TRL's progress bars, among them the reference pass's ("Computing reference
  # log probs ... [00:29<00:00]").
  (cd "$bench_dir" && "$venv/bin/python" trl_dpo_bench.py ../assets "$steps" precompute $arg \
    2>"$out/trl_w1_$precision.err") | tail -1 | tee "$out/trl_w1_$precision.json"
done

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
trl = max((json.load(open(f"{out}/trl_w1_{p}.json")) for p in ("fp32", "bf16")),
          key=lambda r: r["tokens_per_s"])
for p in ("bf16", "fp32"):
    b = json.load(open(f"{out}/burnish_w1_{p}.json"))
    print(f"burnish {p} / TRL's best ({trl['tokens_per_s']:.0f} tokens/s): "
          f"tokens/s {b['tokens_per_s'] / trl['tokens_per_s']:.2f}x, "
          f"peak RSS {b['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x")
PY
