"""Write the prompts `rlhf bench ppo` uses (same selection, same order) for the TRL benchmarks, and beside them
OUT.meta.json naming the world model both sides load.

Usage: .venv/bin/python bench/trl/make_prompts.py OUT.jsonl [N]
N defaults to 192, the set of `rlhf bench ppo` with its defaults (32 prompts x (5 timed + 1 warm-up)
iterations); its rloo/grpo variants (8 prompts x 4 samples) use N = 48. `bench_prompts` keeps the N
candidates nearest 44 tokens, so N changes the set.
"""

import json
import sys
from pathlib import Path

import numpy as np

from rlhf.bench import bench_prompts
from rlhf.io import write_jsonl
from rlhf.models import load_tokenizer
from rlhf.world.build import WorldConfig, build_world

out, n = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 192
world_dir = str(build_world(WorldConfig()))
tokenizer = load_tokenizer(world_dir)
prompts = bench_prompts(n, 44, tokenizer)
lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
write_jsonl(out, [{"prompt": p} for p in prompts])
meta = {
    "world_dir": world_dir,
    "prompts": n,
    "target_tokens": 44,
    "mean_tokens": float(np.mean(lengths)),
    "min_max_tokens": [min(lengths), max(lengths)],
}
Path(f"{out.with_suffix('')}.meta.json").write_text(json.dumps(meta, indent=2))
print(json.dumps(meta, indent=2))
