"""Time TRL's RewardTrainer on the configuration of `rlhf bench reward`, on this machine, for comparison.

Run in a separate virtual environment with trl installed (it is not a dependency of rlhf):
    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 "trl==1.16.*"
    .venv/bin/python bench/trl/make_pairs.py /tmp/bench_pairs_trl.jsonl          # the same pairs
    /tmp/trlvenv/bin/python bench/trl/trl_reward_bench.py WORLD_DIR /tmp/bench_pairs_trl.jsonl bench/trl_reward.json
"""

import json
import statistics
import sys
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl import RewardConfig, RewardTrainer

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
model = AutoModelForSequenceClassification.from_pretrained(
    world_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id
)
dataset = load_dataset("json", data_files=pairs_file, split="train")
timer = StepTimer()
args = RewardConfig(
    output_dir="/tmp/trl_reward_out",
    per_device_train_batch_size=32,
    max_length=128,
    max_steps=35,
    learning_rate=1e-4,
    max_grad_norm=1.0,
    logging_steps=1000,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    bf16=False,
    fp16=False,
    dataloader_num_workers=0,
    disable_dropout=True,
)
trainer = RewardTrainer(
    model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer]
)
trainer.train()
timed = timer.times[WARMUP:]
per_step = statistics.median(timed)
figures = {
    "benchmark": "trl RewardTrainer",
    "trl": __import__("trl").__version__,
    "torch": torch.__version__,
    "batch_pairs": 32,
    "max_length": 128,
    "timed_steps": len(timed),
    "seconds_per_step": per_step,
    "pairs_per_second": 32 / per_step,
    "seconds_per_step_min_max": [min(timed), max(timed)],
}
json.dump(figures, open(out, "w"), indent=2)
print(json.dumps(figures, indent=2))
