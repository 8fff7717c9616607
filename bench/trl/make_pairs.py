"""Write the benchmark's pairs (the same ones `rlhf bench reward` times) in TRL's JSONL convention.

Usage: .venv/bin/python bench/trl/make_pairs.py OUT.jsonl
"""

import sys

from rlhf.bench import bench_pairs
from rlhf.io import write_jsonl
from rlhf.models import load_tokenizer
from rlhf.world.build import WorldConfig, build_world

tokenizer = load_tokenizer(build_world(WorldConfig()))
pairs = bench_pairs(32 * 40, 75, tokenizer)
# TRL concatenates prompt + response as given; our joining rule inserts the space, so TRL gets it here.
write_jsonl(
    sys.argv[1], [{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]
)
