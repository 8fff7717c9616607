"""PPO end to end on tiny models: a trivially learnable reward rises; the result is plain transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf.algorithms.ppo import PPOConfig, train
from rlhf.config import RunConfig
from tests.launch import launch_two

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def test_trivial_reward_rises(small_world, tmp_path):
    # The small world's LM opens some answers with "Sure" (about 6% of samples); rewarding exactly that
    # is learnable in a few iterations: measured 6% -> 100% in 10 iterations of 16 prompts.
    _, world_dir = small_world
    cfg = PPOConfig(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64,
        steps=10, batch_size=16, mini_batch_size=8, lr=3e-3, max_new_tokens=16, kl_coef=0.01, missing_eos_penalty=0.0,
    )  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[:2]) / 2 < 0.3 and sum(scores[-3:]) / 3 > 0.7, scores
    kls = [h["objective/kl"] for h in result.history]
    assert kls[-1] > kls[0]  # moving toward the reward moves away from the reference
    assert {"gold/helpfulness", "policy/clipfrac", "value/explained_variance", "response/eos_rate"} <= set(
        result.history[0]
    )


def test_saved_policy_is_plain_transformers_and_reference_untouched(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="tests.algorithms.test_ppo:brevity", steps=2,
                    batch_size=8, mini_batch_size=4, lr=1e-2, max_new_tokens=6)  # fmt: skip
    train(cfg, RUN, tmp_path / "policy", show_progress=False)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    initial = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    changed = any(
        not torch.equal(a, b) for a, b in zip(trained.parameters(), initial.parameters(), strict=True)
    )
    assert changed
    assert (tmp_path / "policy" / "value_head.pt").is_file()
    assert (tmp_path / "policy" / "logs" / "metrics.jsonl").is_file()


def test_reward_function_errors_are_user_errors(tiny_lm_dir, tmp_path):
    from rlhf.errors import UserError

    cfg = PPOConfig(
        policy=str(tiny_lm_dir), reward="no_such_module:fn", steps=1, batch_size=8, mini_batch_size=4
    )
    with pytest.raises(UserError, match="cannot be imported"):
        train(cfg, RUN, tmp_path / "p", show_progress=False)
    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="/no/such/dir", steps=1, batch_size=8, mini_batch_size=4)
    with pytest.raises(UserError, match="neither a reward-model directory nor module:function"):
        train(cfg, RUN, tmp_path / "p", show_progress=False)
    assert not (tmp_path / "p").exists()


def test_reward_model_source_combines_heads(tmp_path, tiny_lm_dir):
    from rlhf.reward_model import init_reward_model, save_reward_model
    from rlhf.rewards import load_reward_source

    model, tokenizer = init_reward_model(tiny_lm_dir, ["helpful", "harmless"], 1, seed=0)
    save_reward_model(tmp_path / "rm", model, tokenizer)
    helpful = load_reward_source(str(tmp_path / "rm"), {"helpful": 1.0}, device="cpu")(["p"], ["r"])
    harmless = load_reward_source(str(tmp_path / "rm"), {"harmless": 1.0}, device="cpu")(["p"], ["r"])
    both = load_reward_source(str(tmp_path / "rm"), {"helpful": 1.0, "harmless": -2.0}, device="cpu")(
        ["p"], ["r"]
    )
    torch.testing.assert_close(both, helpful - 2 * harmless)
    from rlhf.errors import UserError

    with pytest.raises(UserError, match="does not have"):
        load_reward_source(str(tmp_path / "rm"), {"honest": 1.0}, device="cpu")


def test_cli_ppo_train(tiny_lm_dir, tmp_path, capsys):
    from rlhf.cli import main

    code = main(["ppo", "train", "--policy", str(tiny_lm_dir), "--reward", "tests.algorithms.test_ppo:brevity",
                 "--out", str(tmp_path / "p"), "--set", "ppo.steps=2", "--set", "ppo.batch_size=8",
                 "--set", "ppo.mini_batch_size=4", "--set", "ppo.max_new_tokens=6", "--set", "run.progress=false",
                 "--set", "run.device=cpu"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "objective/scores" in out.out and "policy saved to" in out.out
    from rlhf.metrics import read_metrics

    last = read_metrics(tmp_path / "p" / "logs")[-1]
    assert last["time/episodes_per_s"] > 0 and last["memory/peak_rss_mib"] > 0  # 8 responses per step
    code = main(
        [
            "ppo",
            "train",
            "--out",
            str(tmp_path / "q"),
            "--set",
            "ppo.batch_size=10",
            "--set",
            "ppo.mini_batch_size=4",
        ]
    )
    assert code == 2 and "multiple of ppo.mini_batch_size" in capsys.readouterr().err


def brevity(prompts, responses):
    """Shorter is better: learnable by raising the probability of one token, EOS."""
    return [-len(r) / 50 for r in responses]


def first_character(prompts, responses):
    """Any score that tells apart random responses of the same length: the first character's code."""
    return [ord(r[0]) / 100 if r else 0.0 for r in responses]


def says_sure(prompts, responses):
    """1 when the response opens with 'Sure' (some corpus templates do): one early token to learn."""
    return [float(r.startswith("Sure")) for r in responses]


@pytest.mark.parametrize("advantage,kl_coef", [("rloo", 0.01), ("grpo", 0.01), ("grpo", 0.0)])
def test_critic_free_estimators_raise_the_reward(small_world, tmp_path, advantage, kl_coef):
    _, world_dir = small_world
    cfg = PPOConfig(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, advantage=advantage,
        samples_per_prompt=4, steps=10, batch_size=16, mini_batch_size=8, lr=3e-3, max_new_tokens=16, kl_coef=kl_coef,
        missing_eos_penalty=0.0,
    )  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[:2]) / 2 < 0.3 and sum(scores[-3:]) / 3 > 0.6, scores
    assert "value/explained_variance" not in result.history[0] and "scores/group_std" in result.history[0]
    if kl_coef == 0:  # GRPO without its KL term (TRL's beta = 0): no reference, no KL measured
        assert "loss/kl_term" not in result.history[0] and "objective/kl" not in result.history[0]
    else:
        assert "objective/kl" in result.history[0]
        assert ("loss/kl_term" in result.history[0]) == (advantage == "grpo")


@pytest.mark.parametrize(
    "variant",
    [
        {"loss_agg_mode": "seq-mean-token-sum-norm", "scale_rewards": "none"},  # Dr. GRPO
        {"importance_sampling_level": "sequence", "loss_agg_mode": "seq-mean-token-mean",
         "cliprange": 3e-4, "cliprange_high": 4e-4},  # GSPO, with its paper's clip range
        {"cliprange_high": 0.28, "scale_rewards": "batch"},  # DAPO's clip-higher
    ],
    ids=["dr_grpo", "gspo", "dapo"],
)  # fmt: skip
def test_grpo_objective_variants_raise_the_reward(small_world, tmp_path, variant):
    _, world_dir = small_world
    cfg = PPOConfig(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, advantage="grpo",
        samples_per_prompt=4, steps=10, batch_size=16, mini_batch_size=8, lr=3e-3, max_new_tokens=16, kl_coef=0.0,
        missing_eos_penalty=0.0, **variant,
    )  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[:2]) / 2 < 0.3 and sum(scores[-3:]) / 3 > 0.6, scores


@pytest.mark.parametrize("masked", [True, False])
def test_truncated_completions_can_be_left_out_of_the_loss(tiny_lm_dir, tmp_path, masked):
    """With 2 new tokens no response reaches EOS: masked, the policy loss has no token and one GRPO
    step leaves every weight as it was (Adam on zero gradients moves nothing); unmasked, it learns."""
    from transformers import AutoModelForCausalLM

    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="tests.algorithms.test_ppo:first_character", advantage="grpo",
                    samples_per_prompt=4, steps=1, batch_size=8, mini_batch_size=8, max_new_tokens=2,
                    kl_coef=0.0, mask_truncated_completions=masked, n_world_prompts=8, lr=1e-2)  # fmt: skip
    # scores differ between the samples of a prompt (their first characters do): non-zero advantages
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    assert result.history[0]["response/eos_rate"] == 0.0
    before = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "policy").state_dict()
    changed = max((after[k] - before[k]).abs().max().item() for k in before)
    assert (changed == 0.0) if masked else (changed > 1e-4), changed


def test_objective_options_are_validated():
    from rlhf.config import ConfigError, validate_all

    for key, bad in [
        ("loss_agg_mode", "mean"),
        ("importance_sampling_level", "seq"),
        ("scale_rewards", "std"),
    ]:
        with pytest.raises(ConfigError, match=f"ppo.{key} must be one of"):
            validate_all(PPOConfig(**{key: bad}))
    with pytest.raises(ConfigError, match="cliprange_high"):
        validate_all(PPOConfig(cliprange_high=-0.1))


def test_group_estimators_need_groups():
    from rlhf.config import ConfigError, validate_all

    with pytest.raises(ConfigError, match="samples_per_prompt >= 2"):
        validate_all(PPOConfig(advantage="rloo"))
    with pytest.raises(ConfigError, match="multiple of ppo.samples_per_prompt"):
        validate_all(PPOConfig(advantage="grpo", samples_per_prompt=3, batch_size=32, mini_batch_size=16))


def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(small_world, tmp_path):
    _, world_dir = small_world
    base = dict(policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, steps=4,
                batch_size=8, mini_batch_size=4, lr=3e-3, max_new_tokens=12, save_every=2)  # fmt: skip
    full = train(PPOConfig(**base), RUN, tmp_path / "full", show_progress=False)
    stopped = train(PPOConfig(**base, stop_after_steps=2), RUN, tmp_path / "resumed", show_progress=False)
    assert len(stopped.history) == 2 and not (tmp_path / "resumed" / "config.json").exists()
    resumed = train(PPOConfig(**base), RUN, tmp_path / "resumed", show_progress=False, resume=True)
    assert len(resumed.history) == 4
    for key in ("objective/scores", "objective/kl", "loss/policy", "loss/value"):
        assert resumed.history[2][key] == pytest.approx(full.history[2][key], rel=1e-4, abs=1e-6), key
        assert resumed.history[3][key] == pytest.approx(full.history[3][key], rel=1e-4, abs=1e-6), key
    from safetensors.torch import load_file

    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_lora_policy_uses_adapter_free_reference_and_saves_merged(small_world, tmp_path):
    from transformers import AutoModelForCausalLM

    _, world_dir = small_world
    cfg = PPOConfig(policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=32, steps=3,
                    batch_size=8, mini_batch_size=4, lr=1e-2, max_new_tokens=12, lora_r=4)  # fmt: skip
    result = train(cfg, RUN, tmp_path / "lora", show_progress=False)
    # Before any update the adapters are zero (LoRA's B starts at 0): policy = reference, KL exactly 0.
    assert result.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)
    assert result.history[-1]["objective/kl"] != 0.0
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in name for name, _ in saved.named_parameters())
    initial = AutoModelForCausalLM.from_pretrained(world_dir)
    assert any(not torch.equal(a, b) for a, b in zip(saved.parameters(), initial.parameters(), strict=True))


def test_top_layers_only(small_world, tmp_path):
    from safetensors.torch import load_file

    _, world_dir = small_world
    cfg = PPOConfig(policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=32, steps=2,
                    batch_size=8, mini_batch_size=4, lr=1e-2, max_new_tokens=8, trainable_layers=1)  # fmt: skip
    train(cfg, RUN, tmp_path / "top", show_progress=False)
    before, after = (
        load_file(world_dir / "model.safetensors"),
        load_file(tmp_path / "top" / "model.safetensors"),
    )
    assert torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"]
    )


def test_separate_critic_learns_values_and_is_saved(small_world, tmp_path):
    _, world_dir = small_world
    cfg = PPOConfig(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, critic="separate",
        steps=15, batch_size=16, mini_batch_size=8, lr=1e-3, max_new_tokens=16, kl_coef=0.01, missing_eos_penalty=0.0,
    )  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[-3:]) / 3 > 0.6, scores
    # the critic starts at V = 0 (explained variance <= 0) and learns to predict the returns
    ev = [h["value/explained_variance"] for h in result.history]
    assert ev[0] <= 0.05 and max(ev[-5:]) > 0.3, ev  # measured: 0.0 at first, 0.8-0.9 at the end
    saved = torch.load(tmp_path / "policy" / "critic.pt")
    assert "head.weight" in saved and any(k.startswith("trunk.layers.0.") for k in saved)
    assert not (tmp_path / "policy" / "value_head.pt").exists()


def test_reference_shares_frozen_blocks_and_never_changes(tiny_lm_dir):
    import copy

    from rlhf.logprobs import response_logprobs
    from rlhf.models import freeze_lower_layers, load_causal_lm, share_frozen_modules, transformer_layers

    policy, _ = load_causal_lm(tiny_lm_dir, device="cpu", dtype="float32")
    reference = copy.deepcopy(policy).requires_grad_(False)
    n_frozen = freeze_lower_layers(policy, 1)
    shared = share_frozen_modules(policy, reference)
    layers, ref_layers = transformer_layers(policy), transformer_layers(reference)
    assert n_frozen == len(layers) - 1
    assert all(ref_layers[i] is layers[i] for i in range(n_frozen)) and ref_layers[-1] is not layers[-1]
    assert shared == sum(p.numel() for layer in layers[:n_frozen] for p in layer.parameters()) + (
        0 if policy.config.tie_word_embeddings else policy.get_input_embeddings().weight.numel()
    )
    ids = torch.randint(3, 60, (2, 10))
    mask = torch.ones_like(ids)
    before = response_logprobs(reference, ids, mask, 4)[0]
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1.0)
    response_logprobs(policy, ids, mask, 4)[0].sum().backward()
    optimizer.step()
    after_policy = response_logprobs(policy, ids, mask, 4)[0]
    assert not torch.allclose(after_policy, before)  # the policy's top block moved ...
    torch.testing.assert_close(
        response_logprobs(reference, ids, mask, 4)[0], before
    )  # ... the reference did not


def test_top_layers_and_bf16_autocast_train(small_world, tmp_path):
    _, world_dir = small_world
    cfg = PPOConfig(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, trainable_layers=2,
        mixed_precision="bf16", steps=10, batch_size=16, mini_batch_size=8, lr=3e-3, max_new_tokens=16,
        kl_coef=0.01, missing_eos_penalty=0.0,
    )  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[-3:]) / 3 > 0.5, scores


def logged(out: Path) -> list[dict]:
    from rlhf.metrics import read_metrics

    return read_metrics(out / "logs")


def assert_plain_transformers(out: Path, like: Path) -> None:
    """`out` loads as a plain transformers model of `like`'s architecture, and training changed it."""
    from transformers import AutoModelForCausalLM

    trained, initial = (AutoModelForCausalLM.from_pretrained(p) for p in (out, like))
    assert type(trained) is type(initial)
    weights, before = trained.state_dict(), initial.state_dict()
    assert weights.keys() == before.keys()
    assert any(not torch.equal(weights[k], before[k]) for k in weights)


@pytest.fixture(scope="module")
def one_process_ppo(small_world, tmp_path_factory):
    """The history of a 1-process run with the 2-process runs' global batch (16 responses)."""
    _, world_dir = small_world
    cfg = PPOConfig(policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, steps=10,
                    batch_size=16, mini_batch_size=16, lr=3e-3, max_new_tokens=16, kl_coef=0.01, missing_eos_penalty=0.0)  # fmt: skip
    return train(cfg, RUN, tmp_path_factory.mktemp("one_process") / "policy", show_progress=False).history


@pytest.mark.slow
def test_two_processes_ddp_and_fsdp2_match_one_process_and_resume(small_world, tmp_path, one_process_ppo):
    # 2 processes x 8 responses an iteration, stopped after 5 iterations as if killed, then --resume to 10
    _, world_dir = small_world
    sets = ["ppo.n_world_prompts=64", "ppo.steps=10", "ppo.batch_size=8", "ppo.mini_batch_size=8", "ppo.lr=3e-3",
            "ppo.max_new_tokens=16", "ppo.kl_coef=0.01", "ppo.missing_eos_penalty=0.0", "ppo.save_every=5"]  # fmt: skip
    args = ["--policy", str(world_dir), "--reward", "tests.algorithms.test_ppo:says_sure"]
    runs = {}
    for config in ("ddp", "fsdp2"):
        out = tmp_path / config
        ppo = ["ppo", "train", "--out", str(out), *args]
        stopped = launch_two(config, ppo, [*sets, "ppo.stop_after_steps=5"], timeout=900)
        assert "policy saved to" not in stopped and not (out / "model.safetensors").exists()
        resumed = launch_two(config, [*ppo, "--resume"], sets, timeout=900)
        assert resumed.count("policy saved to") == 1, resumed  # only the main process reports
        rows = logged(out)
        assert [r["step"] for r in rows] == list(range(10))  # main process only, 5 + 5 iterations
        state = torch.load(out / "checkpoint" / "ppo_state.pt", weights_only=False)
        assert len(state["process_rng"]) == 2 and state["step"] == 10
        assert_plain_transformers(out, world_dir)
        runs[config] = rows
    # what each process holds: everything under DDP, its half (of every tensor's rows) under FSDP2
    for config, share in (("ddp", 1.0), ("fsdp2", 0.5)):
        row = runs[config][-1]
        assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(share, abs=0.01)
    # the same samples (same seeds) and the same averaged gradients: the same run, to float rounding,
    # until rounding flips a sampled token (measured: iterations 0-7 equal, 8 apart; lr 3e-3 is chaotic)
    for ddp, fsdp2 in zip(runs["ddp"][:7], runs["fsdp2"][:7], strict=True):
        for key in ("objective/scores", "objective/kl", "loss/policy", "loss/value"):
            assert fsdp2[key] == pytest.approx(ddp[key], rel=1e-3, abs=1e-5), key
    # 2 x 8 learns as 1 x 16 does (other samples: the curves agree within sampling noise): the reward is
    # learnt (about 0.1 at first), and the last 3 iterations' mean score within 0.25 of the 1-process run's
    scores, single = (
        [r["objective/scores"] for r in runs["ddp"]],
        [h["objective/scores"] for h in one_process_ppo],
    )
    assert sum(scores[:2]) / 2 < 0.3 and sum(scores[-3:]) / 3 > 0.6, scores
    assert sum(scores[-3:]) / 3 == pytest.approx(sum(single[-3:]) / 3, abs=0.25), (scores, single)


@pytest.mark.slow
def test_two_process_grpo_under_ddp_and_fsdp2(tiny_lm_dir, tmp_path):
    # GRPO on a random-weight Llama: 2 processes x (2 prompts x 2 samples), 3 iterations, a KL term
    sets = ["ppo.advantage=grpo", "ppo.samples_per_prompt=2", "ppo.steps=3", "ppo.batch_size=4",
            "ppo.mini_batch_size=2", "ppo.max_new_tokens=6", "ppo.kl_coef=0.05"]  # fmt: skip
    args = ["--policy", str(tiny_lm_dir), "--reward", "tests.algorithms.test_ppo:brevity"]
    runs = {}
    for config in ("ddp", "fsdp2"):
        launch_two(config, ["ppo", "train", "--out", str(tmp_path / config), *args], sets, timeout=900)
        assert_plain_transformers(tmp_path / config, tiny_lm_dir)
        runs[config] = logged(tmp_path / config)
    assert runs["ddp"][-1]["parallel/local_parameters"] == runs["ddp"][-1]["parallel/parameters"]
    row = runs["fsdp2"][-1]
    assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(0.5, abs=0.01)
    for ddp, fsdp2 in zip(runs["ddp"], runs["fsdp2"], strict=True):
        for key in ("objective/scores", "loss/policy", "loss/kl_term"):
            assert fsdp2[key] == pytest.approx(ddp[key], rel=1e-3, abs=1e-5), key


@pytest.mark.slow
def test_reward_and_cost_models_are_sharded_under_fsdp2(tiny_lm_dir, tmp_path):
    """A reward model (random heads on the tiny Llama) as reward and, one head negated, as cost: under
    FSDP2 each process holds half of each (before: all of it), and scores the same samples as under DDP,
    where every process holds them whole."""
    from rlhf.reward_model import init_reward_model, save_reward_model

    reward_dir = tmp_path / "rm"
    save_reward_model(reward_dir, *init_reward_model(tiny_lm_dir, ["helpful", "harmless"], 1, seed=0))
    sets = ["ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=4", "ppo.max_new_tokens=6",
            "ppo.kl_coef=0.05", "ppo.reward_weights={helpful: 1.0}", "ppo.cost_weights={harmless: -1.0}"]  # fmt: skip
    args = ["--policy", str(tiny_lm_dir), "--reward", str(reward_dir), "--set", f"ppo.cost={reward_dir}"]
    runs = {}
    for config in ("ddp", "fsdp2"):
        launch_two(config, ["ppo", "train", "--out", str(tmp_path / config), *args], sets, timeout=900)
        runs[config] = logged(tmp_path / config)
    for config, share in (("ddp", 1.0), ("fsdp2", 0.5)):
        for name in ("reward", "cost"):
            row = runs[config][-1]
            held = row[f"parallel/{name}_local_parameters"] / row[f"parallel/{name}_parameters"]
            assert held == pytest.approx(share, abs=0.01), (config, name, held)
    # the same policy samples the same responses (the same seeds), which sharded models score the same
    for ddp, fsdp2 in zip(runs["ddp"], runs["fsdp2"], strict=True):
        for key in ("objective/scores_raw", "objective/cost"):
            assert fsdp2[key] == pytest.approx(ddp[key], rel=1e-5, abs=1e-7), (key, ddp[key], fsdp2[key])
    assert runs["ddp"][0]["objective/scores_raw"] != runs["ddp"][0]["objective/cost"]  # two heads, two scores


def always_costly(prompts, responses):
    """A cost of 1 for every response: the constraint (threshold 0.5) never holds."""
    return [1.0] * len(responses)


def test_safe_rlhf_lagrangian_in_ppo(tiny_lm_dir, tmp_path):
    # lambda <- max(0, lambda + 0.1 * (mean cost 1 - threshold 0.5)): 1.0 -> 1.05 -> 1.10 -> 1.15;
    # the score each iteration is the reward minus lambda (the cost is 1 everywhere) at that iteration's start
    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="tests.algorithms.test_ppo:brevity", cost="tests.algorithms.test_ppo:always_costly",
                    cost_threshold=0.5, lagrange_init=1.0, lagrange_lr=0.1, steps=3, batch_size=8, mini_batch_size=4,
                    max_new_tokens=6, missing_eos_penalty=0.0, save_every=2, stop_after_steps=2)  # fmt: skip
    first = train(cfg, RUN, tmp_path / "p", show_progress=False)
    assert [h["objective/lagrange_multiplier"] for h in first.history] == pytest.approx([1.0, 1.05])
    assert all(h["objective/cost"] == 1.0 for h in first.history)
    raw = first.history[0]["objective/scores_raw"]  # the reward before the penalty
    assert first.history[0]["objective/scores"] == pytest.approx(raw - 1.0, abs=1e-5)
    # the multiplier is part of the checkpoint: a resumed run continues from 1.10
    resumed = train(
        PPOConfig(**{**cfg.__dict__, "stop_after_steps": 0}),
        RUN,
        tmp_path / "p",
        show_progress=False,
        resume=True,
    )
    assert resumed.history[-1]["objective/lagrange_multiplier"] == pytest.approx(1.10)


SEEN_PROMPTS: list[str] = []


def recording(prompts, responses):
    """0 for every response; remembers the prompts it was asked about, in order."""
    SEEN_PROMPTS.extend(prompts)
    return [0.0] * len(responses)


def test_a_small_prompt_file_is_cycled(tiny_lm_dir, tmp_path):
    # 3 prompts, 4 per iteration (before: "3 prompts, fewer than one iteration needs (4 per process ...)"):
    # 3 iterations take 12 prompts, 4 passes over the file, each pass every prompt once in a new order
    from rlhf.io import write_jsonl

    prompts = [f"User: question {i}?\nAssistant:" for i in range(3)]
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in prompts])
    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="tests.algorithms.test_ppo:recording", prompts=str(tmp_path / "prompts.jsonl"),
                    steps=3, batch_size=4, mini_batch_size=16, ppo_epochs=1, max_new_tokens=2)  # fmt: skip
    SEEN_PROMPTS.clear()
    lines: list[str] = []
    result = train(cfg, RUN, tmp_path / "p", show_progress=False, log=lines.append)
    assert len(result.history) == 3 and len(SEEN_PROMPTS) == 12
    passes = [sorted(SEEN_PROMPTS[i : i + 3]) for i in range(0, 12, 3)]
    assert passes == [prompts] * 4
    assert len({tuple(SEEN_PROMPTS[i : i + 3]) for i in range(0, 12, 3)}) > 1  # reshuffled between passes
    assert lines == [
        f"{tmp_path / 'prompts.jsonl'}: 3 prompts, 4 per iteration (ppo.batch_size 4 / ppo.samples_per_prompt 1): "
        "the prompts are cycled, reshuffled on every pass, so an iteration repeats some of them",
        "ppo.mini_batch_size (16) is more than ppo.batch_size (4): one gradient step on all 4 responses per epoch",
    ]


@pytest.mark.parametrize(
    "batch_size,mini_batch_size,k,valid_mini,valid_batch",
    [
        (24, 16, 1, 12, 32),  # 12: the largest divisor of 24 below 16; 32: the next multiple of 16
        (10, 4, 1, 2, 12),
        (18, 4, 3, 3, 24),  # 24: the next multiple of both 4 and samples_per_prompt 3
    ],
)
def test_conflicting_batch_sizes_name_a_valid_choice(batch_size, mini_batch_size, k, valid_mini, valid_batch):
    from rlhf.config import ConfigError, validate_all

    def cfg(batch, mini):
        return PPOConfig(batch_size=batch, mini_batch_size=mini, samples_per_prompt=k,
                         advantage="rloo" if k > 1 else "gae")  # fmt: skip

    with pytest.raises(ConfigError) as info:
        validate_all(cfg(batch_size, mini_batch_size))
    assert str(info.value) == (
        f"ppo.batch_size ({batch_size}) must be a multiple of ppo.mini_batch_size ({mini_batch_size}): "
        f"set ppo.mini_batch_size={valid_mini} or ppo.batch_size={valid_batch}"
    )
    validate_all(cfg(batch_size, valid_mini))  # both choices are valid
    validate_all(cfg(valid_batch, mini_batch_size))
    validate_all(PPOConfig(batch_size=4, mini_batch_size=16))  # one minibatch (before: an error)


@pytest.mark.parametrize("advantage,name", [("gae", "PPO"), ("rloo", "RLOO"), ("grpo", "GRPO")])
def test_progress_bar_names_the_estimator(tiny_lm_dir, tmp_path, monkeypatch, advantage, name):
    import rlhf.metrics

    bars, real = [], rlhf.metrics.progress

    def recording(*args, **kwargs):
        bars.append(kwargs["desc"])
        return real(*args, **{**kwargs, "enabled": False})

    monkeypatch.setattr(rlhf.metrics, "progress", recording)
    cfg = PPOConfig(policy=str(tiny_lm_dir), reward="tests.algorithms.test_ppo:brevity", n_world_prompts=8, advantage=advantage,
                    samples_per_prompt=2, steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=3)  # fmt: skip
    result = train(cfg, RUN, tmp_path / "p", show_progress=True)
    assert bars == [name] and result.main_process  # one process: it is the main one
