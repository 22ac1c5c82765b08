#!/usr/bin/env bash
# W1 side by side: burnish's DPO step (cargo bench --bench w1_dpo) and TRL's reference script
# (shared/bench/trl_dpo_bench.py, TRL + PyTorch on the CPU) on the same machine, one after the
# other, then the ratios. Not part of CI: TRL and PyTorch are several GB.
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
echo "== burnish (gpt2, $steps steps)"
cargo bench -q --bench w1_dpo -- --model gpt2 --steps "$steps" | tail -1 | tee "$out/burnish_w1.json"
for mode in precompute alongside; do
  echo "== TRL ($mode)"
  arg=$([ "$mode" = precompute ] && echo precompute || echo "")
  # stderr keeps TRL's progress bars, among them the reference pass's ("Computing reference
  # log probs ... [00:29<00:00]").
  (cd "$bench_dir" && "$venv/bin/python" trl_dpo_bench.py ../assets "$steps" $arg \
    2>"$out/trl_w1_$mode.err") | tail -1 | tee "$out/trl_w1_$mode.json"
done

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
b = json.load(open(f"{out}/burnish_w1.json"))
for mode in ("precompute", "alongside"):
    t = json.load(open(f"{out}/trl_w1_{mode}.json"))
    print(f"burnish / TRL ({mode}): tokens/s {b['tokens_per_s'] / t['tokens_per_s']:.2f}x, "
          f"peak RSS {b['peak_rss_mb'] / t['peak_rss_mb']:.2f}x")
PY
