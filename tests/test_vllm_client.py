"""rlhf.vllm_client against the loopback stand-in (tests/vllm_standin.py): token ids and log-probs, weight
sync, and every way a server fails -- each a one-line UserError naming the server, never a hang."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from rlhf.errors import UserError
from rlhf.logprobs import response_logprobs, truncate_after_eos
from rlhf.rollout import decode, prompt_batch, sample_next
from rlhf.vllm_client import (
    UNTIE_FLAG,
    RolloutEngine,
    VLLMClient,
    connect_engine,
    engine_decode,
    save_for_reload,
)
from tests.vllm_standin import Faults, free_port, standin_server


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval(), tokenizer


@pytest.fixture(scope="module")
def tied_lm_dir(tmp_path_factory):
    """A tiny Llama whose LM head is its input embeddings (as the world model's, Qwen's, Gemma's)."""
    from tests.conftest import make_model, make_tokenizer

    path = tmp_path_factory.mktemp("tied_lm")
    tokenizer = make_tokenizer()
    make_model(tokenizer, tie_word_embeddings=True).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tied_lm(tied_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tied_lm_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tied_lm_dir).eval()
    assert model.lm_head.weight is model.get_input_embeddings().weight
    return model, tokenizer


@pytest.fixture
def server(tiny_lm_dir):
    faults = Faults()
    with standin_server(tiny_lm_dir, faults=faults) as (url, app):
        yield url, app, faults


PROMPTS = ["User: what is tea?\nAssistant:", "User: I feel tired\nAssistant:"]


def trainer_logprobs(model, enc, generated, tokenizer, repeats, temperature):
    """The trainer's log-probs of generated tokens (B, T) and their mask, as PPO's rollout computes them."""
    responses, mask = truncate_after_eos(generated, tokenizer.eos_token_id, tokenizer.pad_token_id)
    query = enc["input_ids"].repeat_interleave(repeats, 0)
    query_mask = enc["attention_mask"].repeat_interleave(repeats, 0)
    ids = torch.cat([query, responses], 1)
    with torch.no_grad():
        logprobs, _ = response_logprobs(
            model, ids, torch.cat([query_mask, mask.long()], 1), query.shape[1], temperature
        )
    return logprobs, mask


def test_one_prompt_gives_our_samplers_tokens_and_the_models_logprobs(server, lm):
    url, _, _ = server
    model, tokenizer = lm
    enc = prompt_batch(tokenizer, PROMPTS[:1], model, 10, "cpu")
    client = VLLMClient(url, timeout=60)
    generated, sampler_logprobs = engine_decode(client, enc["input_ids"], enc["attention_mask"], 10,
                                                tokenizer.eos_token_id, tokenizer.pad_token_id, repeats=3,
                                                temperature=0.8, seed=11)  # fmt: skip
    # our own loop, same prompt, same seed: the same tokens
    torch.manual_seed(11)
    choose = lambda logits, _: (sample_next(logits, 0.8), None)  # noqa: E731
    ours, _ = decode(model, enc["input_ids"], enc["attention_mask"], 10, choose, tokenizer.eos_token_id,
                     tokenizer.pad_token_id, repeats=3)  # fmt: skip
    assert generated.shape[0] == 3 and len(set(map(tuple, generated.tolist()))) > 1  # 3 distinct samples
    torch.testing.assert_close(generated, ours[:, : generated.shape[1]])
    assert (ours[:, generated.shape[1] :] == tokenizer.pad_token_id).all()  # decode only pads past that
    # the sampler's log-probs are the trainer's (temperature 0.8 applied in both)
    logprobs, mask = trainer_logprobs(model, enc, generated, tokenizer, 3, 0.8)
    torch.testing.assert_close(sampler_logprobs * mask, logprobs * mask, atol=1e-5, rtol=0)
    assert (sampler_logprobs[~mask] == 0).all()


def test_seeded_generation_is_reproducible_and_each_prompt_has_its_own_stream(server, lm):
    url, app, faults = server
    model, tokenizer = lm
    enc = prompt_batch(tokenizer, [PROMPTS[0], PROMPTS[0]], model, 8, "cpu")  # the same prompt twice
    client = VLLMClient(url, timeout=60)
    args = (enc["input_ids"], enc["attention_mask"], 8, tokenizer.eos_token_id, tokenizer.pad_token_id)
    first, _ = engine_decode(client, *args, repeats=2, seed=3)
    again, _ = engine_decode(client, *args, repeats=2, seed=3)
    other, _ = engine_decode(client, *args, repeats=2, seed=4)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[:2], first[2:])  # seed + p * n: the two copies are sampled apart
    assert faults.calls.count("/v1/completions") == 6  # one request per prompt, 3 calls


def test_unseeded_generation_sends_one_request_and_stops_at_eos(server, lm):
    url, _, faults = server
    model, tokenizer = lm
    client = VLLMClient(url, timeout=60)
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    samples = client.generate(ids, 2, 12, tokenizer.eos_token_id)
    assert faults.calls.count("/v1/completions") == 1 and len(samples.token_ids) == 4
    for tokens, logprobs, finished in zip(samples.token_ids, samples.logprobs, samples.finished, strict=True):
        assert len(tokens) == len(logprobs) <= 12 and all(lp <= 0 for lp in logprobs)
        assert finished == (tokens[-1] == tokenizer.eos_token_id)
        assert tokenizer.eos_token_id not in tokens[:-1]


def greedy(client, enc, tokenizer):
    return engine_decode(client, enc["input_ids"], enc["attention_mask"], 8, tokenizer.eos_token_id,
                         tokenizer.pad_token_id, temperature=0.0)  # fmt: skip


def test_weight_sync_makes_the_server_sample_from_the_new_weights(server, lm, tmp_path):
    url, app, faults = server
    model, tokenizer = lm
    enc = prompt_batch(tokenizer, PROMPTS, model, 8, "cpu")
    client = VLLMClient(url, timeout=60)
    before, _ = greedy(client, enc, tokenizer)
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(0)) * 0.5)
    faults.calls.clear()
    RolloutEngine(client, tmp_path / "policy").sync(updated)
    assert faults.calls == ["/pause", "/collective_rpc", "/reset_prefix_cache", "/resume"]
    after, sampler_logprobs = greedy(client, enc, tokenizer)
    assert not torch.equal(before, after)
    # its log-probs are now those of the updated weights (greedy: the unscaled distribution)
    logprobs, mask = trainer_logprobs(updated, enc, after, tokenizer, 1, 1.0)
    torch.testing.assert_close(sampler_logprobs * mask, logprobs * mask, atol=1e-5, rtol=0)
    assert app.state.engine.paused is False


def test_lora_adapter_is_loaded_and_sampled_from(server, lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    url, _, _ = server
    model, tokenizer = lm
    peft_model = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    enc = prompt_batch(tokenizer, PROMPTS, model, 8, "cpu")
    client = VLLMClient(url, timeout=60)
    client.load_lora_adapter("policy", str(tmp_path / "adapter"))
    assert client.model == "policy"
    generated, sampler_logprobs = greedy(client, enc, tokenizer)
    logprobs, mask = trainer_logprobs(merged, enc, generated, tokenizer, 1, 1.0)
    torch.testing.assert_close(sampler_logprobs * mask, logprobs * mask, atol=1e-5, rtol=0)
    base, _ = trainer_logprobs(model, enc, generated, tokenizer, 1, 1.0)
    assert not torch.allclose(base * mask, logprobs * mask, atol=1e-3)  # the adapter does change them


# ---------------------------------------------------------------- failures: one line, naming the server


def test_dead_server_is_a_clear_error(tiny_lm_dir):
    with standin_server(tiny_lm_dir) as (url, app):
        client = VLLMClient(url, timeout=5)
        client.health()
        app.state.stop()  # the server dies
        with pytest.raises(UserError, match=rf"vLLM server {url}: cannot connect for the health check"):
            client.health()
        with pytest.raises(UserError, match=r"cannot connect for listing the models"):
            client.generate([[1, 2]], 1, 4, 0)
    never = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=rf"vLLM server {never}: cannot connect"):
        VLLMClient(never).health()


def test_hung_server_times_out_with_a_clear_error(server):
    url, _, faults = server
    client = VLLMClient(url, model="standin", timeout=0.5)
    faults.hang_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(UserError, match=r"generation \(/v1/completions\) \(POST /v1/completions\) gave no "
                                        r"complete answer within 0.5 s; the server is hung"):  # fmt: skip
        client.generate([[1, 2]], 1, 4, 0)
    assert time.monotonic() - started < 2.5
    with pytest.raises(UserError, match="the health check .* within 0.2 s"):
        client.health(timeout=0.2)
    faults.hang_seconds = 0.0


def test_a_server_that_trickles_its_answer_is_cut_at_the_deadline(server):
    # headers at once, then a byte every 0.2 s: no single read times out, the whole answer does
    url, _, faults = server
    faults.trickle = True
    client = VLLMClient(url, model="standin", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"gave no complete answer within 1 s; the server is hung"):
        client.generate([[1, 2]], 1, 4, 0)
    assert time.monotonic() - started < 1.8


@pytest.mark.parametrize(
    "garbage, message",
    [
        ("not_json", "answered with something that is not JSON: b'<html>502"),
        ("few_choices", "returned 1 choices, expected 2"),
        ("nan_logprobs", "response 0 of /v1/completions has log-probs that are not finite numbers"),
        ("short_logprobs", r"response 0 of /v1/completions has \d+ tokens but \d+ log-probs"),
    ],
)
def test_garbage_answers_are_refused(server, garbage, message):
    url, _, faults = server
    faults.garbage = garbage
    client = VLLMClient(url, timeout=30)
    with pytest.raises(UserError, match=message) as err:
        client.generate([[1, 2, 3]], 2, 6, 0, seed=1)
    assert "\n" not in str(err.value) and url in str(err.value)


def test_missing_dev_routes_say_how_to_start_the_server(server):
    url, _, faults = server
    faults.dev_routes = False
    with pytest.raises(UserError, match=r"/pause\) answered 404: .*VLLM_SERVER_DEV_MODE=1"):
        VLLMClient(url).reload_weights("/nowhere")


def test_failed_reload_still_resumes_generation(server):
    url, app, faults = server
    with pytest.raises(UserError, match=r"reloading the weights \(POST /collective_rpc\) answered 500"):
        VLLMClient(url).reload_weights("/no/such/dir")
    assert faults.calls[-1] == "/resume" and app.state.engine.paused is False


def test_url_must_be_http():
    with pytest.raises(
        UserError, match="ppo.vllm_url must be an http:// or https:// URL; got 'localhost:8000'"
    ):
        VLLMClient("localhost:8000")


def perturbed_embeddings(model):
    """A copy of `model` whose (tied) embeddings, and so its LM head, moved."""
    updated = copy.deepcopy(model)
    with torch.no_grad():
        weight = updated.get_input_embeddings().weight
        weight.add_(torch.randn_like(weight, generator=torch.Generator().manual_seed(1)) * 0.5)
    return updated


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_save_for_reload_writes_a_tied_head_as_its_own_tensor(tied_lm, tmp_path, shard):
    import json

    from transformers import AutoModelForCausalLM

    model, tokenizer = tied_lm
    updated = perturbed_embeddings(model)
    save_for_reload(updated, tmp_path, **({"max_shard_size": shard} if shard else {}))
    if shard:  # sharded checkpoints name the head in their index
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert index["weight_map"]["lm_head.weight"] == "model-lm-head.safetensors"
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert not loaded.config.tie_word_embeddings
    torch.testing.assert_close(loaded.lm_head.weight, updated.lm_head.weight, atol=0, rtol=0)
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, updated(ids).logits, atol=1e-5, rtol=0)


def test_a_tied_head_reloads_only_on_a_server_that_unties_it(tied_lm_dir, tied_lm, lm, tmp_path):
    model, tokenizer = tied_lm
    enc = prompt_batch(tokenizer, PROMPTS, model, 8, "cpu")
    updated = perturbed_embeddings(model)
    with standin_server(tied_lm_dir, untie_head=False) as (url, app):
        # what goes wrong: the server reloads the embeddings but keeps the head it had
        client = VLLMClient(url, timeout=60)
        updated.save_pretrained(tmp_path / "tied")
        client.reload_weights(str(tmp_path / "tied"))
        tokens, sampler = greedy(client, enc, tokenizer)
        logprobs, mask = trainer_logprobs(updated, enc, tokens, tokenizer, 1, 1.0)
        assert ((sampler - logprobs).abs() * mask).max() > 1e-2
        # so such a server is refused at the first sync, naming the flag that fixes it
        engine = connect_engine(url, 60, tmp_path / "w")
        app.state.faults.calls.clear()
        with pytest.raises(UserError) as err:
            engine.sync(updated)
        assert str(err.value) == (
            f"vLLM server {url}: the policy's LM head is tied to its input embeddings, and vLLM reloads such "
            f"a head only when the server is started with {UNTIE_FLAG} (docs/vllm.md)"
        )
        assert app.state.faults.calls == ["/server_info"]  # nothing reloaded
        connect_engine(url, 60, tmp_path / "w").sync(lm[0])  # an untied model's head is its own tensor
    with standin_server(tied_lm_dir) as (url, app):  # started with the flag: the head follows
        engine = connect_engine(url, 60, tmp_path / "w")
        engine.sync(updated)
        tokens, sampler = greedy(engine.client, enc, tokenizer)
        logprobs, mask = trainer_logprobs(updated, enc, tokens, tokenizer, 1, 1.0)
        torch.testing.assert_close(sampler * mask, logprobs * mask, atol=1e-5, rtol=0)


def test_sample_through_the_engine_gives_each_prompt_its_own_seeded_stream(server, lm):
    from rlhf.rollout import SamplingConfig, sample

    url, _, _ = server
    model, tokenizer = lm
    client, cfg = VLLMClient(url, timeout=60), SamplingConfig(max_new_tokens=8, batch_size=2)
    prompts = [
        *PROMPTS,
        "User: why is the sky blue?\nAssistant:",
    ]  # two batches: the seeds run on across them
    drawn = sample(model, tokenizer, prompts, cfg, seed=5, engine=client)
    for i, prompt in enumerate(prompts):  # prompt i: what our own loop draws for it alone with seed 5 + i
        alone = sample(model, tokenizer, [prompt], cfg, seed=5 + i)
        assert drawn.response_ids[i] == alone.response_ids[0] and drawn.responses[i] == alone.responses[0]
    greedy_cfg = SamplingConfig(max_new_tokens=8, temperature=0.0)
    assert sample(model, tokenizer, prompts, greedy_cfg, engine=client).response_ids == (
        sample(model, tokenizer, prompts, greedy_cfg).response_ids
    )


def test_policy_syncs_the_engine_whenever_it_holds_other_weights(server, tiny_lm_dir, tmp_path):
    from rlhf.evaluation.policy import Policy

    url, app, faults = server
    engine = connect_engine(url, 60, tmp_path / "w")
    first, second = Policy(str(tiny_lm_dir), engine=engine), Policy(str(tiny_lm_dir), engine=engine)
    faults.calls.clear()
    first.sample(PROMPTS, 1, 4)
    first.sample(PROMPTS, 2, 4)  # still held: no reload
    second.sample(PROMPTS, 1, 4)
    first.sample(PROMPTS, 1, 4)
    assert [c for c in faults.calls if c in ("/collective_rpc", "/v1/completions")] == [
        "/collective_rpc", *["/v1/completions"] * 2, *["/v1/completions"] * 2,
        "/collective_rpc", *["/v1/completions"] * 2, "/collective_rpc", *["/v1/completions"] * 2,
    ]  # fmt: skip
