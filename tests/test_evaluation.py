"""Win rates by hand, and `rlhf eval` end to end on the small world."""

import json

import pytest

from rlhf.evaluation import win_rate


def test_win_rate_by_hand():
    # wins on prompts 1 and 4, a tie on 2, a loss on 3: (2 + 0.5) / 4 = 0.625
    rate, stats = win_rate([1.0, 0.5, 0.0, 2.0], [0.0, 0.5, 1.0, 1.0])
    assert rate == pytest.approx(0.625)
    assert stats == pytest.approx({"win_rate": 0.625, "wins": 0.5, "ties": 0.25, "losses": 0.25})
    with pytest.raises(ValueError, match="equal, non-empty"):
        win_rate([1.0], [1.0, 2.0])


def test_eval_cli_policy_against_itself_is_a_tie(small_world, tmp_path, capsys):
    from rlhf.cli import main

    _, world_dir = small_world
    code = main(["eval", "--policy", str(world_dir), "--baseline", str(world_dir), "--n", "16", "--max-new-tokens", "8",
                 "--json", str(tmp_path / "eval.json"), "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval.json").read_text())
    # the same model sampled with the same seed: the same responses, every prompt a tie, KL 0
    assert result["win_rate"] == 0.5 and result["ties"] == 1.0
    assert result["kl_to_baseline"] == pytest.approx(0.0, abs=1e-5)
    assert result["policy_gold_helpfulness"] == result["baseline_gold_helpfulness"]
    code = main(["eval", "--policy", str(world_dir), "--baseline", str(world_dir), "--judge", "tests.algorithms.test_ppo:brevity", "--n", "8",
                 "--max-new-tokens", "8", "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    assert code == 0 and "win_rate" in capsys.readouterr().out


# ---------------------------------------------------------------- the baseline and its tokenizer


def _copy_with_config(source, target, config: dict):
    import shutil

    import yaml

    shutil.copytree(source, target)
    (target / "rlhf_config.yaml").write_text(yaml.safe_dump(config))
    return target


def test_tokenizers_compared_by_their_ids_not_by_identity(family_dir, tmp_path):
    import json as _json
    import shutil

    from transformers import AutoTokenizer

    from rlhf.evaluation.kl import PROBE_TEXT, tokenizer_difference
    from rlhf.sequences import encode_prompt

    gpt2, qwen2 = (AutoTokenizer.from_pretrained(family_dir(name)) for name in ("gpt2", "qwen2"))
    # two loads of one tokenizer are two objects with the same ids
    assert tokenizer_difference(gpt2, AutoTokenizer.from_pretrained(family_dir("gpt2"))) is None
    assert (
        tokenizer_difference(gpt2, qwen2)
        == f"vocabularies of {len(gpt2.get_vocab())} and {len(qwen2.get_vocab())} tokens"
    )
    # one vocabulary, another EOS
    other_eos = AutoTokenizer.from_pretrained(family_dir("qwen2"))
    other_eos.eos_token = "<|im_start|>"
    assert tokenizer_difference(qwen2, other_eos) == (
        f"EOS ids {qwen2.eos_token_id} and {other_eos.convert_tokens_to_ids('<|im_start|>')}"
    )
    # one vocabulary, another normaliser (lower-casing): "Hello" becomes other ids
    shutil.copytree(family_dir("gpt2"), tmp_path / "lower")
    spec = _json.loads((tmp_path / "lower" / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (tmp_path / "lower" / "tokenizer.json").write_text(_json.dumps(spec))
    lower = AutoTokenizer.from_pretrained(tmp_path / "lower")
    assert lower.get_vocab() == gpt2.get_vocab()
    n, m = len(encode_prompt(gpt2, PROBE_TEXT)), len(encode_prompt(lower, PROBE_TEXT))
    assert tokenizer_difference(gpt2, lower) == (
        f"one vocabulary but other token ids for the text {PROBE_TEXT!r} ({n} and {m} tokens)"
    )


def test_the_baseline_is_the_policys_initial_model(tmp_path):
    from rlhf.errors import UserError
    from rlhf.evaluation.compare import resolve_baseline

    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "rlhf_config.yaml").write_text(
        "run: {seed: 0}\nppo: {policy: /m/initial, reference: ''}\n"
    )
    (tmp_path / "round").mkdir()  # a later round of the loop: held close to the first policy
    (tmp_path / "round" / "rlhf_config.yaml").write_text("ppo: {policy: /m/round1, reference: /m/initial}\n")
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "rlhf_config.yaml").write_text("dpo: {model: /m/sft}\n")
    ppo, rounds, dpo = (str(tmp_path / name) for name in ("ppo", "round", "dpo"))
    assert resolve_baseline(ppo, None) == (
        "/m/initial",
        f"the policy's initial model, ppo.policy in {ppo}/rlhf_config.yaml",
    )
    assert resolve_baseline(rounds, None)[0] == "/m/initial"
    assert resolve_baseline(dpo, None) == (
        "/m/sft",
        f"the policy's initial model, dpo.model in {dpo}/rlhf_config.yaml",
    )
    assert resolve_baseline(ppo, "/m/other") == ("/m/other", "--baseline")
    assert resolve_baseline("world", None) == ("world", "the world model itself")
    # before: the world model, built if need be, whatever the policy's tokenizer
    with pytest.raises(UserError) as info:
        resolve_baseline(str(tmp_path), None)
    assert str(info.value) == (
        f"{tmp_path} names no initial model (no rlhf_config.yaml of an rlhf training command beside it): "
        "give --baseline MODEL, a model with the policy's tokenizer ('world' for the bundled world's)"
    )


def test_eval_cli_compares_a_policy_with_its_initial_model(tiny_lm_dir, tmp_path, capsys):
    from rlhf.cli import main
    from rlhf.io import write_jsonl

    # a "trained" policy whose weights are its initial model's: KL 0, every prompt a tie
    policy = _copy_with_config(
        tiny_lm_dir, tmp_path / "policy", {"ppo": {"policy": str(tiny_lm_dir), "reference": ""}}
    )
    write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": f"User: question {i}?\nAssistant:"} for i in range(4)]
    )
    code = main(["eval", "--policy", str(policy), "--judge", "tests.algorithms.test_ppo:brevity", "--prompts",
                 str(tmp_path / "prompts.jsonl"), "--max-new-tokens", "6", "--json", str(tmp_path / "eval.json"),
                 "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    why = f"the policy's initial model, ppo.policy in {policy}/rlhf_config.yaml"
    assert out.out.splitlines()[0] == f"baseline: {tiny_lm_dir} ({why})"
    result = json.loads((tmp_path / "eval.json").read_text())
    assert (result["baseline"], result["baseline_from"]) == (str(tiny_lm_dir), why)
    assert result["ties"] == 1.0 and result["kl_to_baseline"] == pytest.approx(0.0, abs=1e-5)


def test_eval_refuses_a_baseline_with_another_tokenizer(family_dir, tmp_path, capsys):
    # before: a KL of hundreds of nats printed as a result (token ids of one vocabulary read by another)
    from rlhf.cli import main

    gpt2, qwen2 = family_dir("gpt2"), family_dir("qwen2")
    policy = _copy_with_config(gpt2, tmp_path / "policy", {"dpo": {"model": str(qwen2)}})
    common = ["--judge", "tests.algorithms.test_ppo:brevity", "--n", "4", "--set", "run.device=cpu", "--set", "run.progress=false"]  # fmt: skip
    for args, named in [(["--baseline", str(qwen2)], "(--baseline)"),
                        ([], f"(the policy's initial model, dpo.model in {policy}/rlhf_config.yaml)")]:  # fmt: skip
        code = main(["eval", "--policy", str(policy), *args, *common])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(
            f"rlhf: error: the policy {policy} and the baseline {qwen2} {named} have different tokenizers (vocabularies of "
        )
        assert lines[0].endswith(
            "give --baseline a model with the policy's tokenizer, such as its initial model"
        )
    # a model of one's own with its own initial model and no --prompts: the world's prompts and gold judge
    # were used silently (all ties, win rate 0.5)
    own = _copy_with_config(gpt2, tmp_path / "own", {"dpo": {"model": str(gpt2)}})
    assert main(["eval", "--policy", str(own), "--n", "4", "--set", "run.device=cpu"]) == 2
    assert capsys.readouterr().err.startswith(
        f"rlhf: error: {own} is not a model of the bundled world (another tokenizer), so the world's prompts "
        "and gold judge say nothing about it: give --prompts FILE and --judge RM_DIR"
    )


def test_kl_to_a_reference_with_another_tokenizer_is_refused(family_dir):
    from transformers import AutoTokenizer

    from rlhf.errors import UserError
    from rlhf.evaluation.kl import check_same_tokenizer

    gpt2, qwen2 = (AutoTokenizer.from_pretrained(family_dir(name)) for name in ("gpt2", "qwen2"))
    with pytest.raises(
        UserError, match=r"^m1 and the reference m2 have different tokenizers \(vocabularies of"
    ):
        check_same_tokenizer(gpt2, qwen2, "m1", "m2")
    check_same_tokenizer(gpt2, AutoTokenizer.from_pretrained(family_dir("gpt2")), "m1", "m1")


def test_eval_prompts_from_a_dataset_dict_are_its_held_out_split(tiny_lm_dir, tmp_path, capsys):
    """A DatasetDict as --prompts was read at its `train` split: 3 training prompts evaluated as held out."""
    import datasets

    from rlhf.cli import main

    policy = _copy_with_config(
        tiny_lm_dir, tmp_path / "policy", {"ppo": {"policy": str(tiny_lm_dir), "reference": ""}}
    )
    prompts = lambda n, tag: datasets.Dataset.from_list(  # noqa: E731
        [{"prompt": f"User: {tag} question {i}?\nAssistant:"} for i in range(n)]
    )
    datasets.DatasetDict({"train": prompts(3, "train"), "test": prompts(2, "test")}).save_to_disk(
        tmp_path / "dd"
    )
    code = main(["eval", "--policy", str(policy), "--judge", "tests.algorithms.test_ppo:brevity", "--prompts",
                 str(tmp_path / "dd"), "--max-new-tokens", "4", "--json", str(tmp_path / "eval.json"),
                 "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"prompts: the 'test' split of {tmp_path / 'dd'}" in out.out
    assert json.loads((tmp_path / "eval.json").read_text())["prompts"] == 2


def test_a_policy_trained_from_a_relative_path_finds_its_initial_model_from_anywhere(
    tiny_lm_dir, tmp_path, monkeypatch
):
    """`--policy models/base` was saved as typed: from another directory the baseline was missing, or
    another `models/base` there was taken for it."""
    import shutil

    from rlhf.algorithms.ppo import PPOConfig, train
    from rlhf.config import RunConfig
    from rlhf.evaluation.compare import resolve_baseline

    (tmp_path / "work" / "models").mkdir(parents=True)
    shutil.copytree(tiny_lm_dir, tmp_path / "work" / "models" / "base")
    monkeypatch.chdir(tmp_path / "work")
    cfg = PPOConfig(policy="models/base", reward="tests.algorithms.test_ppo:brevity", steps=1, batch_size=4,
                    mini_batch_size=4, max_new_tokens=4, n_world_prompts=8)  # fmt: skip
    train(
        cfg, RunConfig(seed=0, device="cpu", tensorboard=False, progress=False), "runs/p", show_progress=False
    )
    shutil.move("runs/p", tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    baseline, why = resolve_baseline(str(tmp_path / "elsewhere"), None)
    assert baseline == str(tmp_path / "work" / "models" / "base") and why.startswith(
        "the policy's initial model"
    )
