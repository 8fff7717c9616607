"""Write the prompts `rlhf bench ppo` uses (same selection, same order) for the TRL benchmarks, and beside them
OUT.meta.json naming the model both sides load.

Usage: .venv/bin/python bench/trl/make_prompts.py OUT.jsonl [N] [--model DIR]
N defaults to 192, the set of `rlhf bench ppo` with its defaults (32 prompts x (5 timed + 1 warm-up)
iterations); its rloo/grpo variants (8 prompts x 4 samples) use N = 48. `bench_prompts` keeps the N
candidates nearest 44 tokens, so N changes the set. --model: a causal LM directory for both sides (e.g. the
random Llama of bench/make_llama.py, which has the world's tokenizer, so the prompts are the same); default
the world model.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from rlhf.bench import bench_prompts
from rlhf.io import write_jsonl
from rlhf.models import load_tokenizer
from rlhf.world.build import WorldConfig, build_world

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("out", type=Path, help="JSONL of prompts to write")
parser.add_argument("n", type=int, nargs="?", default=192, help="how many prompts")
parser.add_argument("--model", help="model directory both sides load (default: the world model)")
args = parser.parse_args()
model_dir = args.model or str(build_world(WorldConfig()))
tokenizer = load_tokenizer(model_dir)
prompts = bench_prompts(args.n, 44, tokenizer)
lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
write_jsonl(args.out, [{"prompt": p} for p in prompts])
meta = {
    "world_dir": model_dir,  # the model both sides load (the key's name predates --model)
    "prompts": args.n,
    "target_tokens": 44,
    "mean_tokens": float(np.mean(lengths)),
    "min_max_tokens": [min(lengths), max(lengths)],
}
Path(f"{args.out.with_suffix('')}.meta.json").write_text(json.dumps(meta, indent=2))
print(json.dumps(meta, indent=2))
