"""Write a random-weight Llama with the world's tokenizer to a directory, for benchmarks at a size where the
update's matrix products are large enough to measure against the CPU's matmul peak (issue #19).

Usage: .venv/bin/python bench/make_llama.py OUT_DIR [--layers 7] [--hidden 512] [--intermediate 1536] [--heads 8]

The defaults give 26.0M parameters: 7 blocks of 512 (8 heads of 64, SwiGLU MLP 1536: 3.41M each, 23.9M in
all) and untied input and output embeddings of 2,048 x 512 (1.05M each); the recipe of
`bench/parallel_memory.py` (8 blocks, 29.4M) with one block fewer. Weights are drawn with seed 0, so the
same arguments write the same model. Ours (`rlhf bench ppo --model OUT_DIR`) and TRL's benchmarks
(`bench/trl/make_prompts.py --model OUT_DIR`, whose .meta.json the TRL scripts read) load this directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def random_llama(
    out: Path, layers: int = 7, hidden: int = 512, intermediate: int = 1536, heads: int = 8
) -> int:
    """Write the model and the world's tokenizer to `out`; returns the number of parameters."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhf.world.report import resolve_world_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_world_model("world", None, False))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="directory to write")
    parser.add_argument("--layers", type=int, default=7, help="transformer blocks")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size")
    parser.add_argument("--intermediate", type=int, default=1536, help="MLP width")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (and key/value heads)")
    args = parser.parse_args()
    n = random_llama(args.out, args.layers, args.hidden, args.intermediate, args.heads)
    print(json.dumps({"model_dir": str(args.out), "parameters": n}))


if __name__ == "__main__":
    main()
