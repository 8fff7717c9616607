"""Time TRL's GRPOTrainer on our critic-free configuration (8 prompts x 4 samples), on this machine, for comparison.

Run in a separate venv with trl 1.16 (not a dependency of rlhf), torch installed first and pinned:
    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 && /tmp/trlvenv/bin/pip install "trl==1.16.*"
    .venv/bin/python bench/trl/make_prompts.py /tmp/bench_prompts_trl8.jsonl 48   # our grpo prompts + world model path
    for i in 1 2 3; do /tmp/trlvenv/bin/python bench/trl/trl_grpo_bench.py /tmp/bench_prompts_trl8.jsonl bench/trl_grpo_$i.json; done
Options: --model DIR (default: the model PROMPTS.meta.json names; make_prompts.py --model sets it)
--iterations (timed, default 20) --warmup (default 3) --beta (KL coefficient; TRL's default 0 loads no
reference model; > 0 adds a separate frozen reference).

Configuration: the world Llama (or the --model of make_prompts.py) as policy, a same-size reward model (fresh scalar head on the world LM) as
reward_funcs, 8 prompts (about 44 tokens) x 4 generations = 32 completions per step, at most 32 new tokens
(generation stops at EOS), temperature 1, num_iterations=1 (one gradient step per generation), fp32, dropout
off, no gradient checkpointing (TRL's default is on). An episode is one completion.
"""

import statistics

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl_common import StepTimer, load_models, parse_args, summarise

PROMPTS, GENERATIONS = 8, 4
args = parse_args(__doc__, iterations=20, warmup=3, beta=(float, 0.0, "KL coefficient (TRL's default 0.0)"))
# No reference here: with beta > 0 the trainer loads its own separate copy.
tokenizer, policy, _, reward_model = load_models(args.world, reference=False)
timer = StepTimer()
config = GRPOConfig(
    output_dir="/tmp/trl_grpo_out",
    per_device_train_batch_size=PROMPTS * GENERATIONS,
    gradient_accumulation_steps=1,
    num_generations=GENERATIONS,
    max_completion_length=32,
    num_iterations=1,
    beta=args.beta,
    temperature=1.0,
    learning_rate=1e-5,
    max_steps=args.warmup + args.iterations,
    disable_dropout=True,
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
trainer = GRPOTrainer(
    model=policy,
    reward_funcs=reward_model,
    reward_processing_classes=tokenizer,
    args=config,
    train_dataset=Dataset.from_dict({"prompt": args.prompt_texts}),
    processing_class=tokenizer,
    callbacks=[timer],
)
trainer.train()
logs = [log for log in timer.logs if "completions/mean_length" in log][args.warmup :]
summarise(
    "trl GRPOTrainer",
    args,
    timer,
    PROMPTS * GENERATIONS,
    {
        "trainer": "trl.GRPOTrainer",
        "reward_model": "same size, separate (AutoModelForSequenceClassification, num_labels=1)",
        "reference": "separate frozen copy" if args.beta else "none (beta=0)",
        "beta": args.beta,
        "prompts_per_step": PROMPTS,
        "generations_per_prompt": GENERATIONS,
        "max_completion_length": 32,
        "temperature": 1.0,
        "num_iterations": 1,
        "loss_type": config.loss_type,
        "gradient_checkpointing": False,
    },
    mean_response_tokens=statistics.mean(log["completions/mean_length"] for log in logs),
    eos_rate=1 - statistics.mean(log["completions/clipped_ratio"] for log in logs),
)
