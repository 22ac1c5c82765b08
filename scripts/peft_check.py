"""Loads burnish-written PEFT adapters with Hugging Face PEFT and compares the logits with
burnish's merged export, both through transformers. Run by scripts/peft_check.sh, which trains
the adapters first; not part of CI (PEFT, transformers and PyTorch are several GB)."""
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel

ids = torch.tensor([[5, 17, 101, 33, 250, 7, 9, 400, 12, 3, 77, 42]])
fixtures, runs = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    base_dir = f"{fixtures}/{name}"
    run = f"{runs}/run-{name}/final"
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits
    peft = PeftModel.from_pretrained(base, f"{run}/adapter")
    peft.eval()
    merged = AutoModelForCausalLM.from_pretrained(run, torch_dtype=torch.float32)
    with torch.no_grad():
        a = peft(ids).logits
        b = merged(ids).logits
    print(json.dumps({
        "model": name,
        "peft_vs_burnish_merged_max_abs": float((a - b).abs().max()),
        "adapter_moved_logits_max_abs": float((a - base_logits).abs().max()),
        "adapter_config": json.load(open(f"{run}/adapter/adapter_config.json"))["target_modules"],
    }))
