"""`rlhf sample`: K responses per prompt from the training sampler, as rows `rlhf reward normalize` and
`rlhf label import` read; greedy decoding equals `generate`, chat prompts are rendered by the template."""

from __future__ import annotations

import pytest
import torch

from rlhf.cli import main
from rlhf.io import read_jsonl, write_jsonl
from rlhf.rollout import SamplingConfig

PROMPTS = ["User: what is tea?\nAssistant:", "User: how do I bake bread?\nAssistant:", "User: hi\nAssistant:"]
QUIET = ["--device", "cpu"]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, [{"prompt": p} for p in PROMPTS])
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_k_responses_per_prompt_from_the_training_sampler(tiny_lm_dir, prompt_file, tmp_path, capsys):
    from rlhf.models import load_causal_lm
    from rlhf.rollout import sample

    code, out, err = run(capsys, "sample", "--model", tiny_lm_dir, "--prompts", prompt_file, "--out",
                         tmp_path / "s.jsonl", "--n-per-prompt", 3, "--max-new-tokens", 6, "--seed", 7, *QUIET)  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == f"wrote 9 responses (3 prompts x 3) to {tmp_path / 's.jsonl'}"
    rows = read_jsonl(tmp_path / "s.jsonl")
    # one row per response, each prompt's 3 in a row, in file order; nothing but prompt and response
    assert [r["prompt"] for r in rows] == [p for p in PROMPTS for _ in range(3)]
    assert all(set(r) == {"prompt", "response"} for r in rows)
    # exactly what rlhf.rollout.sample gives on the prompts repeated K times, with the same seed
    model, tokenizer = load_causal_lm(tiny_lm_dir, device="cpu")
    expected = sample(model, tokenizer, [r["prompt"] for r in rows], SamplingConfig(max_new_tokens=6), seed=7)
    assert [r["response"] for r in rows] == expected.responses
    assert len({r["response"] for r in rows}) > 3  # sampled: the 3 responses of a prompt differ


def test_greedy_is_generate(family_dir, tmp_path):
    # temperature 0: every one of the K responses is transformers' greedy `generate` on the prompt's ids
    # (llama2: the SentencePiece tokenizer that adds BOS)
    from rlhf.models import load_causal_lm
    from rlhf.sampling import sample_responses
    from rlhf.sequences import encode_prompt

    model, tokenizer = load_causal_lm(family_dir("llama2"), device="cpu")
    prompts = ["Question: what is tea? Answer:", "Question: is the sky blue? Answer:"]
    responses, unfinished = sample_responses(
        model, tokenizer, prompts, 2, SamplingConfig(max_new_tokens=5, temperature=0.0)
    )
    cut = 0
    for prompt, group in zip(prompts, responses, strict=True):
        ids = encode_prompt(tokenizer, prompt)
        assert ids[0] == tokenizer.bos_token_id
        generated = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=5, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):]  # fmt: skip
        expected = tokenizer.decode(generated, skip_special_tokens=True).strip()
        assert group == [expected, expected]
        cut += 2 * (tokenizer.eos_token_id not in generated.tolist())
    assert unfinished == cut  # responses that reached max_new_tokens without EOS


def test_chat_prompts_are_rendered_with_the_models_template(family_dir, tmp_path, capsys):
    model_dir = family_dir("qwen2")
    messages = [[{"role": "user", "content": "what is tea?"}], [{"role": "user", "content": "hi"}]]
    write_jsonl(tmp_path / "chat.jsonl", [{"prompt": m} for m in messages])
    code, _, err = run(capsys, "sample", "-m", model_dir, "-p", tmp_path / "chat.jsonl", "-o", tmp_path / "s.jsonl",
                       "--max-new-tokens", 4, *QUIET)  # fmt: skip
    assert code == 0, err
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = read_jsonl(tmp_path / "s.jsonl")
    # "<|im_start|>user\nwhat is tea?<|im_end|>\n<|im_start|>assistant\n": the prompt PPO would sample from
    assert [r["prompt"] for r in rows] == [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages
    ]
    assert rows[0]["prompt"] == "<|im_start|>user\nwhat is tea?<|im_end|>\n<|im_start|>assistant\n"


def test_tasks_import_as_labelling_tasks_and_responses_normalize_a_reward_model(
    tiny_lm_dir, prompt_file, tmp_path, capsys
):
    # the tutorial's two uses: tasks for `rlhf label import`, samples for `rlhf reward normalize --samples`
    code, out, err = run(capsys, "sample", "-m", tiny_lm_dir, "-p", prompt_file, "-o", tmp_path / "tasks.jsonl",
                         "--format", "tasks", "--max-new-tokens", 8, *QUIET)  # fmt: skip
    assert code == 0, err
    tasks = read_jsonl(tmp_path / "tasks.jsonl")
    assert out.splitlines()[0] == f"wrote {len(tasks)} tasks (3 prompts x 2) to {tmp_path / 'tasks.jsonl'}"
    assert [set(t) for t in tasks] == [{"prompt", "responses"}] * len(tasks) and len(tasks) == 3
    assert all(len(set(t["responses"])) == 2 for t in tasks)  # two different responses: a pairwise task
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    code, out, err = run(capsys, "label", "import", tmp_path / "tasks.jsonl", "--db", db)
    assert (code, out.strip()) == (0, f"imported 3 tasks from {tmp_path / 'tasks.jsonl'}"), err

    from rlhf.reward_model import init_reward_model, save_reward_model

    model, tokenizer = init_reward_model(tiny_lm_dir, ["helpful"], 1, seed=0)
    save_reward_model(tmp_path / "rm", model, tokenizer)
    code, _, err = run(capsys, "sample", "-m", tiny_lm_dir, "-p", prompt_file, "-o", tmp_path / "samples.jsonl",
                       "-k", 4, "--max-new-tokens", 8, *QUIET)  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "reward", "normalize", "--model", tmp_path / "rm", "--samples",
                         tmp_path / "samples.jsonl", "--device", "cpu")  # fmt: skip
    assert code == 0 and "normalisation stored" in out, err
    # the 12 samples, scored with the statistics stored from them, have mean 0
    code, _, err = run(capsys, "reward", "score", "--model", tmp_path / "rm", "--data", tmp_path / "samples.jsonl",
                       "--out", tmp_path / "scored.jsonl", "--normalize", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    scores = [r["score"] for r in read_jsonl(tmp_path / "scored.jsonl")]
    assert len(scores) == 12 and sum(scores) / 12 == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--format", "tasks", "--temperature", "0"], "no prompt got two different non-empty responses to make "
         "a task of (greedy decoding gives one; sample with --temperature > 0)"),
        (["--format", "tasks", "-k", "1"], "a labelling task compares 2 to 9 responses; give --n-per-prompt 2 to 9"),
        (["--format", "pairs"], "--format 'pairs': expected one of responses, tasks"),
    ],
)  # fmt: skip
def test_what_cannot_be_written_is_one_line(tiny_lm_dir, prompt_file, tmp_path, capsys, args, message):
    code, _, err = run(capsys, "sample", "-m", tiny_lm_dir, "-p", prompt_file, "-o", tmp_path / "x.jsonl",
                       "--max-new-tokens", 3, *args, *QUIET)  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x.jsonl").exists()


def test_prompts_longer_than_the_context_are_counted_and_kept_whole(family_dir, tmp_path, capsys):
    # n_positions 32 less --max-new-tokens 8 leaves 24 prompt tokens; the long prompt is cut for the model
    # (as in training) but its row keeps the whole text, and the summary says so
    model_dir = family_dir("gpt2", n_positions=32)
    long = "User: " + "tell me about tea and bread " * 10 + "\nAssistant:"
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": long}, {"prompt": "User: hi\nAssistant:"}])
    code, out, err = run(capsys, "sample", "--model", model_dir, "--prompts", tmp_path / "p.jsonl", "--out",
                         tmp_path / "s.jsonl", "--max-new-tokens", 8, *QUIET)  # fmt: skip
    assert code == 0, err
    assert (
        "1 prompts are longer than the 24 tokens the model's context leaves beside --max-new-tokens 8" in out
    )
    assert [r["prompt"] for r in read_jsonl(tmp_path / "s.jsonl")] == [long, "User: hi\nAssistant:"]
