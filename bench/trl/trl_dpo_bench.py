"""Time TRL's DPOTrainer on the configuration of `rlhf bench dpo`, on this machine, for comparison.

Run in a separate virtual environment with trl installed (it is not a dependency of rlhf):
    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 "trl==1.16.*"
    .venv/bin/python bench/trl/make_pairs.py /tmp/bench_pairs_trl.jsonl          # the same pairs as ours
    /tmp/trlvenv/bin/python bench/trl/trl_dpo_bench.py WORLD_DIR /tmp/bench_pairs_trl.jsonl bench/trl_dpo.json

TRL's defaults otherwise: a separate reference model whose log-probs are computed on the fly in each
step (`precompute_ref_log_probs=False`), sigmoid loss, beta 0.1; batch 32 pairs, max length 128, fp32,
dropout off. The step time comes from a TrainerCallback (data loading excluded), median after 5 warm-up steps.
"""

import json
import statistics
import sys
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

world_dir, pairs_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
WARMUP = 5


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.last = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.last)


tokenizer = AutoTokenizer.from_pretrained(world_dir)
model = AutoModelForCausalLM.from_pretrained(world_dir, dtype=torch.float32)
ref_model = AutoModelForCausalLM.from_pretrained(world_dir, dtype=torch.float32)
dataset = load_dataset("json", data_files=pairs_file, split="train")
timer = StepTimer()
args = DPOConfig(
    output_dir="/tmp/trl_dpo_out",
    per_device_train_batch_size=32,
    max_length=128,
    max_steps=35,
    learning_rate=1e-5,
    max_grad_norm=1.0,
    beta=0.1,
    logging_steps=1000,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    bf16=False,
    fp16=False,
    dataloader_num_workers=0,
    disable_dropout=True,
)
trainer = DPOTrainer(
    model=model,
    ref_model=ref_model,
    args=args,
    train_dataset=dataset,
    processing_class=tokenizer,
    callbacks=[timer],
)
trainer.train()
timed = timer.times[WARMUP:]
per_step = statistics.median(timed)
figures = {
    "benchmark": "trl DPOTrainer",
    "trl": __import__("trl").__version__,
    "torch": torch.__version__,
    "batch_pairs": 32,
    "max_length": 128,
    "reference": "separate model, log-probs on the fly (TRL's default)",
    "timed_steps": len(timed),
    "seconds_per_step": per_step,
    "pairs_per_second": 32 / per_step,
    "seconds_per_step_min_max": [min(timed), max(timed)],
}
json.dump(figures, open(out, "w"), indent=2)
print(json.dumps(figures, indent=2))
