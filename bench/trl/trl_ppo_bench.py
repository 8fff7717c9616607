"""Time TRL's PPOTrainer on the configuration of `rlhf bench ppo`, on this machine, for comparison.

PPOTrainer shipped last in trl 1.12 (as trl.experimental.ppo; removed in 1.13), so it gets its own venv,
torch installed first and pinned (otherwise pip fetches the CUDA build):
    python3 -m venv /tmp/trl112 && /tmp/trl112/bin/pip install torch==2.13.0 && /tmp/trl112/bin/pip install "trl==1.12.*"
    .venv/bin/python bench/trl/make_prompts.py /tmp/bench_prompts_trl.jsonl      # our prompts + world model path
    for i in 1 2 3; do /tmp/trl112/bin/python bench/trl/trl_ppo_bench.py /tmp/bench_prompts_trl.jsonl bench/trl_ppo_$i.json; done
Options: --model DIR (default: the model PROMPTS.meta.json names; make_prompts.py --model sets it)
--iterations (timed, default 10) --warmup (default 2) --stop-token eos|none (default eos).

Configuration as ours: policy (the world Llama, or the --model of make_prompts.py), separate frozen reference, same-size reward model (fresh scalar head on the
world LM) and, as TRL requires, a separate same-size value model; batch 32 prompts (about 44 tokens),
32 new tokens, temperature 1, 4 PPO epochs, 1 minibatch, fp32, dropout off, no gradient checkpointing
(TRL's default is on), no eval or sample generations. An episode is one prompt's rollout, as TRL counts it.
"""

import statistics

import torch
from datasets import Dataset
from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer
from trl_common import StepTimer, load_models, parse_args, summarise

BATCH = 32
args = parse_args(__doc__, iterations=10, warmup=2, stop_token=(str, "eos", "'eos' (like ours) or 'none'"))
stop_token = None if args.stop_token == "none" else args.stop_token

# Record each rollout's generated width (decode steps) and the response lengths up to the first EOS.
widths, lengths, eos_rates = [], [], []
_batch_generation = ppo_trainer.batch_generation


def batch_generation(model, queries, *rest):
    query_responses, logits = _batch_generation(model, queries, *rest)
    response = query_responses[:, queries.shape[1] :]
    widths.append(response.shape[1])
    is_eos = response == model.config.eos_token_id
    ends = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, response.shape[1])
    lengths.append(ends.float().mean().item())
    eos_rates.append(is_eos.any(1).float().mean().item())
    return query_responses, logits


ppo_trainer.batch_generation = batch_generation

tokenizer, policy, ref_policy, reward_model = load_models(args.world)
value_model = type(reward_model).from_pretrained(
    args.world, num_labels=1, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id
)
ids = tokenizer(args.prompt_texts, add_special_tokens=False)["input_ids"]
dataset = Dataset.from_dict({"input_ids": ids})
timer = StepTimer()
config = PPOConfig(
    output_dir="/tmp/trl_ppo_out",
    per_device_train_batch_size=BATCH,
    gradient_accumulation_steps=1,
    num_mini_batches=1,
    num_ppo_epochs=4,
    total_episodes=BATCH * (args.warmup + args.iterations),
    response_length=32,
    stop_token=stop_token,
    temperature=1.0,
    missing_eos_penalty=1.0,
    kl_coef=0.05,
    learning_rate=1e-5,
    local_rollout_forward_batch_size=BATCH,
    num_sample_generations=0,
    gradient_checkpointing=False,
    bf16=False,
    fp16=False,
    use_cpu=True,
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    report_to=[],
    disable_tqdm=True,
    dataloader_num_workers=0,
    seed=0,
)
trainer = PPOTrainer(
    args=config,
    processing_class=tokenizer,
    model=policy,
    ref_model=ref_policy,
    reward_model=reward_model,
    value_model=value_model,
    train_dataset=dataset,
    callbacks=[timer],
)
trainer.train()
summarise(
    "trl PPOTrainer",
    args,
    timer,
    BATCH,
    {
        "trainer": "trl.experimental.ppo.PPOTrainer",
        "reference": "separate frozen copy",
        "reward_model": "same size, separate (AutoModelForSequenceClassification, num_labels=1)",
        "value": "separate value model, same size (TRL's only option)",
        "batch_prompts": BATCH,
        "response_length": 32,
        "stop_token": stop_token,
        "temperature": 1.0,
        "ppo_epochs": 4,
        "minibatches": 1,
        "gradient_checkpointing": False,
    },
    generated_width_tokens=statistics.mean(widths[args.warmup :]),  # decode steps per rollout
    mean_response_tokens=statistics.mean(lengths[args.warmup :]),  # up to and including the first EOS
    eos_rate=statistics.mean(eos_rates[args.warmup :]),  # share of responses that emit EOS
)
