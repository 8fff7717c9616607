"""The `rlhf` command line: thin Typer commands that parse options and call library functions.

User mistakes (`UserError`) print one line on stderr and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from rlhf.errors import UserError

app = typer.Typer(
    help="rlhf: Reinforcement Learning from Human Feedback. Add --debug to any command for full tracebacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Show the resolved configuration and the keys it accepts.", no_args_is_help=True
)
world_app = typer.Typer(
    help="The bundled toy world: build its LM, sample it, run its labeller panel, export data.",
    no_args_is_help=True,
)
model_app = typer.Typer(help="Inspect causal LMs loaded through rlhf.models.", no_args_is_help=True)
reward_app = typer.Typer(help="Reward models: train, evaluate, score, normalise.", no_args_is_help=True)
ppo_app = typer.Typer(
    help="PPO fine-tuning of a policy against a reward, with a KL penalty.", no_args_is_help=True
)
dpo_app = typer.Typer(
    help="Direct preference optimisation (DPO, cDPO, IPO) of a policy on preference pairs.",
    no_args_is_help=True,
)
kto_app = typer.Typer(
    help="Kahneman-Tversky optimisation (KTO) of a policy on binary (thumbs up/down) labels.",
    no_args_is_help=True,
)
ilql_app = typer.Typer(
    help="Offline RL with Implicit Language Q-Learning: train on logged rewards, generate steered.",
    no_args_is_help=True,
)
bench_app = typer.Typer(help="Benchmarks that print and write JSON figures.", no_args_is_help=True)
label_app = typer.Typer(
    help="Human feedback: the labelling web app, labellers, importing tasks, exporting labels.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(model_app, name="model")
app.add_typer(reward_app, name="reward")
app.add_typer(ppo_app, name="ppo")
app.add_typer(dpo_app, name="dpo")
app.add_typer(kto_app, name="kto")
app.add_typer(ilql_app, name="ilql")
app.add_typer(bench_app, name="bench")
app.add_typer(label_app, name="label")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (sections as in `rlhf config show`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one config key, e.g. --set world.steps=500 (repeatable)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (overrides the config's seed).")]
PreferenceDataOpt = Annotated[
    str | None, typer.Option("--data", "-d", help="Preference file: JSONL, Parquet or datasets folder.")
]
EvalDataOpt = Annotated[
    str | None, typer.Option("--eval-data", help="Separate evaluation file (default: hold out prompts).")
]
EvalSplitOpt = Annotated[
    str | None,
    typer.Option(
        "--eval-split",
        help="DatasetDict split to evaluate on: of --eval-data, or of --data without it (default: test, "
        "else validation).",
    ),
]
PolicyDataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Training file (JSONL, Parquet or datasets folder): DPO pairs, rankings or ratings; KTO binary "
        "prompt/completion/label rows.",
    ),
]
OnErrorOpt = Annotated[
    str | None,
    typer.Option(
        "--on-error", help="Bad data rows: 'stop' at the first (default) or 'skip' with a report file."
    ),
]


@app.callback()
def _version(value: bool) -> None:
    if value:
        from rlhf import __version__

        typer.echo(f"rlhf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if debug:
        os.environ["RLHF_DEBUG"] = "1"
    # transformers' own per-file loading bars add noise between our progress bars and tables.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _config(config: Path | None, sets: list[str] | None):
    from rlhf.config_root import load_root_config

    return load_root_config(str(config) if config else None, sets or [])


def _console():
    from rich.console import Console

    return Console()


# ----------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    keys: Annotated[
        bool, typer.Option("--keys", help="List every key with its type and help instead.")
    ] = False,
) -> None:
    """Print the resolved configuration (defaults < --config file < --set overrides) as YAML."""
    from rlhf.config import describe, to_yaml
    from rlhf.config_root import RootConfig

    if keys:
        from rich.table import Table

        table = Table("key", "type", "help")
        for key, type_name, help_text in describe(RootConfig):
            table.add_row(key, type_name, help_text)
        _console().print(table)
        return
    typer.echo(to_yaml(_config(config, sets)), nl=False)


# ----------------------------------------------------------------------------- model


@model_app.command("info")
def model_info(
    model: Annotated[
        str, typer.Argument(help="Local directory or model id in the local Hugging Face cache.")
    ],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
) -> None:
    """Load a causal LM and its tokenizer and print what was loaded."""
    from rlhf.models import count_parameters, load_causal_lm

    lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
    param = next(lm.parameters())
    typer.echo(f"architecture: {type(lm).__name__}")
    typer.echo(f"parameters: {count_parameters(lm):,}")
    typer.echo(f"device: {param.device}  dtype: {param.dtype}")
    typer.echo(f"vocab: {len(tokenizer)}  eos: {tokenizer.eos_token!r}  pad: {tokenizer.pad_token!r}")


@model_app.command("check")
def model_check(
    model: Annotated[
        str, typer.Argument(help="Local directory or model id in the local Hugging Face cache.")
    ],
    prompt: Annotated[
        str | None, typer.Option(help="Prompt of the plain-text example (default: a tea question).")
    ] = None,
    response: Annotated[str | None, typer.Option(help="Response of both examples.")] = None,
    user: Annotated[
        str | None, typer.Option(help="User message of the chat example (with a chat template).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show how rlhf builds sequences for a model's tokenizer (no weights loaded), with its pitfalls."""
    import json

    from rlhf.model_check import check_model, format_check

    messages = [{"role": "user", "content": user}] if user is not None else None
    report = check_model(model, prompt=prompt, response=response, messages_prompt=messages)
    typer.echo(json.dumps(report, indent=2) if as_json else format_check(report))


# ----------------------------------------------------------------------------- world


@world_app.command("build")
def world_build(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Directory for the model and tokenizer (default: the cache)."),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when a matching build exists.")
    ] = False,
) -> None:
    """Build (or re-use) the world's tokenizer and tiny pretrained LM; prints its directory."""
    from rlhf.world.build import build_world, is_built, read_world_info, world_dir

    cfg = _config(config, sets)
    if seed is not None:
        cfg.world.seed = seed
    target = out or world_dir(cfg.world)
    reused = not force and is_built(target, cfg.world)
    path = build_world(cfg.world, out=target, force=force, show_progress=cfg.run.progress)
    info = read_world_info(path)
    state = "re-used" if reused else f"built in {info['seconds']} s"
    typer.echo(f"world model {state}: {path}")
    typer.echo(
        f"parameters: {info['parameters']:,}  held-out loss: {info['eval_loss_before']:.3f} -> {info['eval_loss_after']:.3f}"
    )


@world_app.command("sample")
def world_sample(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Causal LM directory or cached model id (default 'world': the built world model).",
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Number of prompts.")] = 8,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Maximum tokens per response.")] = 64,
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help="Also write prompt/response/scores rows to this JSONL file."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", help="Also report the KL of --model to this model ('world' = the initial LM)."
        ),
    ] = None,
) -> None:
    """Sample responses of a causal LM to world prompts and print them with their gold scores."""
    from rlhf.world.report import sample_table

    cfg = _config(config, sets)
    rows, summary = sample_table(
        cfg, model, n, seed if seed is not None else cfg.run.seed, temperature, max_new_tokens, reference
    )
    _print_samples(rows, summary)
    if jsonl is not None:
        from rlhf.io import write_jsonl

        write_jsonl(jsonl, rows)
        typer.echo(f"wrote {len(rows)} rows to {jsonl}")


def _print_samples(rows: list[dict], summary: dict) -> None:
    from rich.table import Table

    from rlhf.evaluation.kl import kl_note

    table = Table(
        "prompt",
        "response",
        "kind",
        "help",
        "harm",
        show_lines=True,
        title="Samples scored by the gold functions",
    )
    for row in rows:
        table.add_row(
            row["prompt"].replace("\nAssistant:", ""),
            row["response"],
            row["kind"],
            f"{row['helpfulness']:.2f}",
            f"{row['harm']:.2f}",
        )
    console = _console()
    console.print(table)
    shares = ", ".join(f"{k} {v:.0%}" for k, v in summary["kind_shares"].items())
    console.print(
        f"mean helpfulness {summary['mean_helpfulness']:.3f}  mean harm {summary['mean_harm']:.3f}  "
        f"finished (emitted EOS) {summary['finished']:.0%}  kinds: {shares}"
        + (
            f"  KL to reference {summary['mean_kl']:.2f} nats{kl_note(summary['mean_kl'])}"
            if "mean_kl" in summary
            else ""
        )
    )


@world_app.command("panel")
def world_panel(
    n_pairs: Annotated[
        int, typer.Option("--n-pairs", min=2, help="Response pairs every labeller compares.")
    ] = 400,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Print the simulated panel's agreement: with gold, with the majority of the others, per labeller."""
    from rlhf.world.report import panel_table

    cfg = _config(config, sets)
    if seed is not None:
        cfg.panel.seed = seed
    panel_table(cfg.panel, n_pairs, _console())


@world_app.command("export")
def world_export(
    what: Annotated[str, typer.Argument(help="prompts | pairs | responses")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of rows.")] = 1000,
    seed: SeedOpt = None,
    judge: Annotated[
        str,
        typer.Option(
            help="pairs: who picks 'chosen': gold (the hidden utility) or panel (simulated labellers)."
        ),
    ] = "gold",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="responses/pairs: sample from this LM ('world' = the built world model) instead of the corpus.",
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="pairs: 'helpful' (which answer is better) or 'harmless' (which is less harmful; risky prompts)."
        ),
    ] = "helpful",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Export world prompts, preference pairs (prompt/chosen/rejected) or scored responses as JSONL."""
    from rlhf.world.export import export

    cfg = _config(config, sets)
    count = export(
        cfg,
        what,
        out,
        n,
        seed if seed is not None else cfg.run.seed,
        judge=judge,
        model=model,
        objective=objective,
    )
    typer.echo(f"wrote {count} {what} rows to {out}")


# ----------------------------------------------------------------------------- reward


@reward_app.command("train")
def reward_train(
    data: PreferenceDataOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Directory for the trained reward model.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Backbone causal LM ('world' = the built world model)."),
    ] = None,
    eval_data: EvalDataOpt = None,
    eval_split: EvalSplitOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    on_error: OnErrorOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint/last.")] = False,
) -> None:
    """Train a reward model (Bradley-Terry on pairs, Plackett-Luce on rankings, a logistic loss on binary
    thumbs up/down rows) and save it to --out."""
    from rlhf.algorithms.reward import train

    cfg = _config(config, sets)
    _apply(cfg.reward, data=data, model=model, eval_data=eval_data, eval_split=eval_split, on_error=on_error)
    _set_seed_and_require_out(cfg, seed, out, "reward model")
    result = train(cfg.reward, cfg.run, out, resume=resume, world=cfg.world, show_progress=cfg.run.progress)
    _report_training(result, "reward model")


@reward_app.command("eval")
def reward_eval(
    model: Annotated[str, typer.Option("--model", "-m", help="Trained reward model directory.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Preference file to evaluate on.")],
    split: Annotated[
        str | None, typer.Option("--split", help="DatasetDict split (default: test, else validation).")
    ] = None,
    on_error: OnErrorOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Pairwise accuracy, loss and calibration (ECE) of a reward model on preference data."""
    from rlhf.algorithms.reward import evaluate_file

    metrics = evaluate_file(model, data, on_error=on_error or "stop", device=device, split=split)
    _print_metrics(metrics)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(metrics, indent=2))


@reward_app.command("score")
def reward_score(
    model: Annotated[str, typer.Option("--model", "-m", help="Trained reward model directory.")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Rows with prompt and response (text or chat messages).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="JSONL: each input row plus score, score_<head> (and _std).")
    ],
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Apply the stored normalisation statistics.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Score (prompt, response) rows with a reward model: `score` is the first head, `score_<head>` every head."""
    from rlhf.algorithms.reward import score_file

    count = score_file(model, data, out, normalize=normalize, device=device)
    typer.echo(f"wrote {count} scored rows to {out}")


@reward_app.command("normalize")
def reward_normalize(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Trained reward model directory (updated in place).")
    ],
    samples: Annotated[
        str, typer.Option("--samples", help="Reference policy samples: rows with prompt and response.")
    ],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Store the mean and std of the scores over reference policy samples, for normalised rewards in RL."""
    from rlhf.algorithms.reward import normalize_model

    mean, std = normalize_model(model, samples, device=device)
    typer.echo(f"normalisation stored: mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}")


@reward_app.command("pmp-pairs")
def reward_pmp_pairs(
    data: Annotated[str, typer.Option("--data", "-d", help="Dialogues: rows with prompt and response.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pairs file (JSONL) for rlhf reward train.")],
    group_field: Annotated[
        str | None, typer.Option("--group-field", help="Draw the rejected response from the same group.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the pairing.")] = 0,
) -> None:
    """Label-free preference-model pretraining pairs: each dialogue's own response over another prompt's."""
    from rlhf.data import pretraining_pairs, read_response_rows
    from rlhf.io import write_jsonl

    rows, prompts, responses = read_response_rows(data)
    groups = None
    if group_field:
        missing = [i + 1 for i, r in enumerate(rows) if group_field not in r]
        if missing:
            raise UserError(
                f"{data}: row {missing[0]} has no field {group_field!r} ({len(missing)} rows lack it)"
            )
        groups = [str(r[group_field]) for r in rows]
    pairs = pretraining_pairs(prompts, responses, seed, groups)
    write_jsonl(out, pairs)
    typer.echo(
        f"wrote {len(pairs)} pairs to {out} ({len(rows) - len(pairs)} dialogues had no other to pair with)"
    )


def _apply(section, **values) -> None:
    """Command-line flags win over the config file and --set."""
    for key, value in values.items():
        if value is not None:
            setattr(section, key, value)
    from rlhf.config import validate_all

    validate_all(section)


def _set_seed_and_require_out(cfg, seed: int | None, out: Path | None, what: str) -> None:
    """What every training command checks first: --seed overrides the config, --out is required."""
    if seed is not None:
        cfg.run.seed = seed
    if out is None:
        raise UserError(f"give --out DIR for the trained {what}")


def _report_training(result, what: str) -> None:
    """The end of an offline training command: a time-boxed stop, or the metrics and where it went."""
    if not result.metrics:  # a non-main process of a data-parallel run: the main one reports
        return
    if "stopped_at_step" in result.metrics:
        typer.echo(
            f"stopped at step {result.metrics['stopped_at_step']}; continue with --resume (checkpoint in {result.out}/checkpoint)"
        )
        return
    _print_metrics(result.metrics)
    typer.echo(f"{what} saved to {result.out}")


def _print_metrics(metrics: dict) -> None:
    from rich.table import Table

    table = Table("metric", "value", title="Evaluation")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    _console().print(table)
    negative_kl = [k for k, v in metrics.items() if "kl" in k.lower() and isinstance(v, float) and v < 0]
    if negative_kl:
        from rlhf.evaluation.kl import kl_note

        typer.echo(f"{', '.join(negative_kl)} < 0{kl_note(metrics[negative_kl[0]])}")


# ----------------------------------------------------------------------------- ppo


@ppo_app.command("train")
def ppo_train(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the trained policy.")] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", "-p", help="Initial policy ('world' = the world model).")
    ] = None,
    reward: Annotated[
        str | None, typer.Option("--reward", "-r", help="Reward-model directory or module:function.")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="Prompt file (field 'prompt'); default: world prompts.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint.")] = False,
) -> None:
    """Fine-tune a policy with PPO against a reward model or function; saves it with save_pretrained."""
    from rlhf.algorithms.ppo import train

    cfg = _config(config, sets)
    _apply(cfg.ppo, policy=policy, reward=reward, prompts=prompts)
    _set_seed_and_require_out(cfg, seed, out, "policy")
    result = train(cfg.ppo, cfg.run, out, world=cfg.world, show_progress=cfg.run.progress, resume=resume)
    if not result.main_process:  # another process of an `accelerate launch` run: the main one reports
        return
    if len(result.history) < cfg.ppo.steps:
        typer.echo(
            f"stopped after {len(result.history)} iterations; continue with --resume (checkpoint in {out}/checkpoint)"
        )
        return
    first, last = result.history[0], result.history[-1]
    from rlhf.evaluation.kl import kl_note

    for key in ("objective/scores", "gold/helpfulness", "gold/harm", "objective/kl"):
        if key in first:
            note = kl_note(min(first[key], last[key])) if key == "objective/kl" else ""
            typer.echo(f"{key}: {first[key]:.3f} (first iteration) -> {last[key]:.3f} (last){note}")
    if "mismatch/kl" in first:  # another engine sampled: how far its log-probs were from the trainer's
        worst = max(result.history, key=lambda h: h["mismatch/kl"])
        typer.echo(
            f"sampler/trainer mismatch: KL per token at most {worst['mismatch/kl']:.2e}, "
            f"{max(h['mismatch/masked_fraction'] for h in result.history):.1%} of tokens masked at most "
            f"(ppo.is_mode={cfg.ppo.is_mode}, ppo.is_cap={cfg.ppo.is_cap:g})"
        )
    typer.echo(f"policy saved to {result.out}")


# ----------------------------------------------------------------------------- dpo and kto


def _policy_train(
    ctx: typer.Context,
    data: PolicyDataOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the trained policy.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "--policy", "-m", help="Initial policy and reference ('world' = the world model)."
        ),
    ] = None,
    eval_data: EvalDataOpt = None,
    eval_split: EvalSplitOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    on_error: OnErrorOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint.")] = False,
) -> None:
    """`rlhf dpo train` and `rlhf kto train`: one command, run with the config section and the trainer
    (`rlhf.algorithms.<section>.train`) of the group it was called as."""
    import importlib

    section = ctx.parent.info_name  # "dpo" or "kto"
    train = importlib.import_module(f"rlhf.algorithms.{section}").train
    cfg = _config(config, sets)
    _apply(
        getattr(cfg, section),
        data=data,
        model=model,
        eval_data=eval_data,
        eval_split=eval_split,
        on_error=on_error,
    )
    _set_seed_and_require_out(cfg, seed, out, "policy")
    result = train(
        getattr(cfg, section), cfg.run, out, resume=resume, world=cfg.world, show_progress=cfg.run.progress
    )
    _report_training(result, "policy")


dpo_app.command(
    "train",
    help="Fine-tune a policy with DPO on preference pairs (TRL's prompt/chosen/rejected, rankings, ratings).",
)(_policy_train)
kto_app.command(
    "train",
    help="Fine-tune a policy with KTO on binary labels (TRL's prompt/completion/label rows; pairs in the data "
    "are unpaired: chosen desirable, rejected undesirable).",
)(_policy_train)


# ----------------------------------------------------------------------------- ilql


@ilql_app.command("train")
def ilql_train(
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="Rows with prompt, response, reward; or preference pairs with --reward."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Directory for the LM and its heads.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Initial LM ('world' = the world model).")
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option("--reward", help="Reward model (or module:function) scoring a preference file."),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    on_error: OnErrorOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint.")] = False,
) -> None:
    """Train ILQL's Q and V heads (and the LM) on logged responses and rewards."""
    from rlhf.algorithms.ilql import train

    cfg = _config(config, sets)
    _apply(cfg.ilql, data=data, model=model, reward=reward, on_error=on_error)
    _set_seed_and_require_out(cfg, seed, out, "model")
    result = train(cfg.ilql, cfg.run, out, resume=resume, world=cfg.world, show_progress=cfg.run.progress)
    _report_training(result, "ILQL model")


@ilql_app.command("generate")
def ilql_generate(
    model: Annotated[str, typer.Option("--model", "-m", help="An `rlhf ilql train` output directory.")],
    prompts: Annotated[
        str | None,
        typer.Option("--prompts", "-p", help="Prompt file (field 'prompt'); default: world prompts."),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="World prompts to draw when no file is given.")] = 8,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write prompt/response rows to this JSONL.")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="Steering strength (default: the one saved).")] = None,
    top_k: Annotated[int | None, typer.Option(help="Top-k over the steered logits (default: saved).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Maximum tokens per response.")] = 64,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Also report the KL to this model ('world' = initial LM)."),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Generate with an ILQL model: the LM's logits steered by beta * (Q - V). World prompts are scored
    by the hidden gold functions."""
    from rlhf.algorithms.ilql import generate, load_ilql
    from rlhf.data import load_prompts
    from rlhf.world import corpus
    from rlhf.world.report import score_responses, summarise

    cfg = _config(config, sets)
    seed = cfg.run.seed if seed is None else seed
    if reference is not None and temperature <= 0:
        raise UserError("--reference needs sampling (--temperature > 0): greedy decoding has no distribution")
    ilql, tokenizer, saved = load_ilql(model, device=cfg.run.device, dtype=cfg.run.dtype)
    texts = load_prompts(prompts, tokenizer=tokenizer) if prompts else corpus.sample_prompts(n, seed)
    samples = generate(ilql, tokenizer, texts, saved["beta"] if beta is None else beta,
                       saved["top_k"] if top_k is None else top_k, temperature, max_new_tokens, seed)  # fmt: skip
    rows = [{"prompt": p, "response": r} for p, r in zip(samples.prompts, samples.responses, strict=True)]
    if sum(corpus.parse_request(p) is not None for p in texts) == len(texts):  # the bundled world's prompts
        rows = score_responses(samples.prompts, samples.responses)
        for row, finished in zip(rows, samples.finished, strict=True):
            row["finished"] = finished
        summary = summarise(rows)
        if reference is not None:
            from rlhf.evaluation import sampled_kl
            from rlhf.evaluation.kl import check_same_tokenizer
            from rlhf.world.report import load_world_lm

            ref_lm, ref_tokenizer = load_world_lm(cfg, reference)
            check_same_tokenizer(tokenizer, ref_tokenizer, model, reference)
            summary["mean_kl"] = sum(
                sampled_kl(None, ref_lm, tokenizer, samples, max(temperature, 1e-6))
            ) / len(rows)
        _print_samples(rows[:8], summary)
    else:
        for row in rows[:8]:
            typer.echo(f"{row['prompt']!r} -> {row['response']!r}")
    if out is not None:
        from rlhf.io import write_jsonl

        write_jsonl(out, rows)
        typer.echo(f"wrote {len(rows)} rows to {out}")


# ----------------------------------------------------------------------------- sample


@app.command("sample")
def sample_model(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Causal LM directory ('world' = the world model).")
    ],
    prompts: Annotated[
        str, typer.Option("--prompts", "-p", help="Prompt file (field 'prompt': text or chat messages).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    n_per_prompt: Annotated[
        int | None,
        typer.Option("--n-per-prompt", "-k", min=1, help="Responses per prompt (default: 1; tasks: 2)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="'responses': a {prompt, response} row per response (rlhf reward score / normalize); "
            "'tasks': a {prompt, responses} row per prompt (rlhf label import).",
        ),
    ] = "responses",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Maximum tokens per response.")] = 48,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling (1 = off).")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Top-k sampling (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Responses generated in one batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Sample a model's responses to a prompt file with the training sampler, K per prompt, as JSONL."""
    from rlhf.rollout import SamplingConfig
    from rlhf.sampling import sample_file
    from rlhf.world.report import resolve_world_model

    k = n_per_prompt if n_per_prompt is not None else (2 if fmt == "tasks" else 1)
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         batch_size=batch_size)  # fmt: skip
    summary = sample_file(resolve_world_model(model), prompts, out, k, cfg, seed, fmt, device)
    what = "tasks" if fmt == "tasks" else "responses"
    typer.echo(f"wrote {summary.rows} {what} ({summary.prompts} prompts x {k}) to {out}")
    if summary.left_out:
        typer.echo(f"{summary.left_out} prompts left out: fewer than 2 different non-empty responses")
    if summary.cut_prompts:
        typer.echo(
            f"{summary.cut_prompts} prompts are longer than the {summary.prompt_room} tokens the model's context "
            f"leaves beside --max-new-tokens {max_new_tokens}: the model saw only their last tokens (the rows "
            "keep the whole prompt); shorten them or lower --max-new-tokens"
        )
    if summary.unfinished:
        typer.echo(
            f"{summary.unfinished} of {summary.responses} responses stopped at --max-new-tokens {max_new_tokens} "
            "without EOS (cut text)"
        )


# ----------------------------------------------------------------------------- eval


def _head_weights(text: str, option: str) -> dict[str, float]:
    """`text` as a mapping of reward-model head names to numbers, e.g. '{helpful: 1.0, harmless: 0.5}'."""
    from rlhf.config import parse_value

    value = parse_value(text, f"{option} {text!r}")
    if (
        not isinstance(value, dict)
        or not value
        or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in value.items()
        )
    ):
        raise UserError(
            f"{option} {text!r}: expected head names with numbers, e.g. '{{helpful: 1.0, harmless: 0.5}}'"
        )
    return {k: float(v) for k, v in value.items()}


@app.command("eval")
def eval_policy(
    policy: Annotated[str, typer.Option("--policy", help="The policy to evaluate (directory or 'world').")],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="The model to compare with, with the policy's tokenizer ('world' = the world model); "
            "default: the policy's initial model, from the rlhf_config.yaml saved beside it.",
        ),
    ] = None,
    judge: Annotated[
        str,
        typer.Option(
            "--judge", help="'gold' (the world's hidden utility) or a reward model / module:function."
        ),
    ] = "gold",
    judge_weights: Annotated[
        str | None,
        typer.Option(
            "--judge-weights",
            help="Weights of a reward-model judge's heads, e.g. '{helpful: 1.0, harmless: 0.5}'; "
            "default: its first head.",
        ),
    ] = None,
    prompts: Annotated[
        str | None,
        typer.Option("--prompts", "-p", help="Prompt file (field 'prompt'); default: world prompts."),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="World prompts when no file is given.")] = 256,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Maximum tokens per response.")] = 64,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    vllm_url: Annotated[
        str | None,
        typer.Option("--vllm-url", help="Sample both models with this `vllm serve` (docs/vllm.md)."),
    ] = None,
    vllm_weights_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --vllm-url: where the weights are saved for the server (default: a temp dir)."
        ),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Win rate of a policy against a baseline on the same prompts, mean scores, KL, response kinds."""
    import json

    from rlhf.data import load_prompts
    from rlhf.data.readers import choose_split
    from rlhf.evaluation import evaluate
    from rlhf.evaluation.compare import resolve_baseline
    from rlhf.models import load_tokenizer, resolve_model_path
    from rlhf.world.report import resolve_world_model

    cfg = _config(config, sets)
    typer.echo("baseline: {} ({})".format(*resolve_baseline(policy, baseline)))
    texts = None
    if prompts:
        tokenizer = load_tokenizer(
            resolve_model_path(resolve_world_model(policy, cfg.world, cfg.run.progress))
        )
        split = choose_split(prompts, None, "eval")  # held-out prompts: test, then validation
        if split is not None:
            typer.echo(f"prompts: the {split!r} split of {prompts}")
        texts = load_prompts(prompts, tokenizer=tokenizer, split=split)
    weights = _head_weights(judge_weights, "--judge-weights") if judge_weights else None
    if weights and (judge == "gold" or not Path(judge).expanduser().is_dir()):
        raise UserError(
            f"--judge-weights weighs a reward model's heads; --judge {judge} is not a reward model"
        )
    with contextlib.ExitStack() as stack:
        engine = None
        if vllm_url:
            from rlhf.vllm_client import connect_engine

            weights_dir = vllm_weights_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            engine = connect_engine(vllm_url, cfg.ppo.vllm_timeout, weights_dir, option="--vllm-url")
        result = evaluate(cfg, policy, baseline, judge, texts, n, cfg.run.seed if seed is None else seed,
                          max_new_tokens, weights, engine)  # fmt: skip
    _print_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        typer.echo(f"wrote {json_out}")


# ----------------------------------------------------------------------------- bench


BenchModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="The model to time: `world` (the bundled one) or any causal LM directory; random weights do.",
    ),
]


@bench_app.command("reward")
def bench_reward(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/reward.json"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Timed optimiser steps (after warm-up).")] = 30,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up steps.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 32,
    bf16: Annotated[bool, typer.Option("--bf16", help="Also time bf16 autocast.")] = False,
    model: BenchModelOpt = "world",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Reward-model training throughput (pairs/second) and peak memory on a fixed configuration."""
    from rlhf.bench import bench_reward as run_bench

    cfg = _config(config, sets)
    figures = run_bench(cfg, out, steps=steps, warmup=warmup, batch_size=batch_size, bf16=bf16, model=model)
    for row in figures["runs"]:
        typer.echo(
            f"{row['precision']}: {row['pairs_per_second']:.1f} pairs/s, {row['seconds_per_step'] * 1000:.1f} ms/step, peak RSS {row['peak_rss_mib']:.0f} MiB"
        )
    typer.echo(f"wrote {out}")


@bench_app.command("ppo")
def bench_ppo(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/ppo.json"
    ),
    iterations: Annotated[int, typer.Option(min=1, help="Timed iterations (after one warm-up).")] = 5,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="ppo (32 prompts, 4 epochs), rloo, grpo or grpo_nokl (8 prompts x 4 samples, 1 epoch; "
            "grpo_nokl: no KL term and no reference, TRL's default); repeatable.",
        ),
    ] = None,
    critic: Annotated[str, typer.Option(help="PPO's value function: shared or separate.")] = "shared",
    bf16: Annotated[bool, typer.Option("--bf16", help="Also time bf16 autocast.")] = False,
    model: BenchModelOpt = "world",
    vllm_url: Annotated[
        str,
        typer.Option(
            "--vllm-url", help="Time each run again with this `vllm serve` sampling (docs/vllm.md)."
        ),
    ] = "",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """PPO/RLOO/GRPO throughput: episodes/s, generated tokens/s, generation share, peak memory, and
    plain generate on the same model and batch."""
    from rlhf.bench import bench_ppo as run_bench

    if critic not in ("shared", "separate"):
        raise UserError(f"--critic must be shared or separate, got {critic!r}")
    f = run_bench(
        _config(config, sets),
        out,
        iterations=iterations,
        variants=tuple(variant or ["ppo"]),
        critic=critic,
        bf16=bf16,
        model=model,
        vllm_url=vllm_url,
    )
    typer.echo(f"plain generate: {f['plain_generate_tokens_per_second']:.0f} tokens/s")
    for r in f["runs"]:
        typer.echo(
            f"{r['variant']} {r['precision']} ({r['rollout_engine']} sampler): {r['episodes_per_second']:.1f} "
            f"episodes/s, rollout generate "
            f"{r['rollout_generate_tokens_per_second']:.0f} tokens/s ({r['rollout_vs_generate']:.2f}x plain), "
            f"rollout {r['generation_share']:.0%} of the time, peak RSS {r['peak_rss_mib']:.0f} MiB; update "
            f"epochs {r['update_share']:.0%} of the time at {r['update_gflops']:.1f} GFLOP/s, "
            f"{r['update_peak_share']:.0%} of the fp32 matmul peak ({r['matmul_peak_gflops']:.1f} GFLOP/s)"
        )
    typer.echo(f"wrote {out}")


@bench_app.command("ilql")
def bench_ilql(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/ilql.json"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Timed optimiser steps (after warm-up).")] = 30,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up steps.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Responses per step.")] = 32,
    model: BenchModelOpt = "world",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """ILQL training throughput (responses/second) and peak memory, heads only and with the whole LM."""
    from rlhf.bench import bench_ilql as run_bench

    figures = run_bench(
        _config(config, sets), out, steps=steps, warmup=warmup, batch_size=batch_size, model=model
    )
    for row in figures["runs"]:
        typer.echo(
            f"{row['trained']}: {row['responses_per_second']:.1f} responses/s "
            f"({row['seconds_per_step'] * 1000:.1f} ms/step), peak RSS {row['peak_rss_mib']:.0f} MiB"
        )
    typer.echo(f"wrote {out}")


@bench_app.command("dpo")
def bench_dpo(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/dpo.json"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Timed optimiser steps (after warm-up).")] = 30,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up steps.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 32,
    bf16: Annotated[bool, typer.Option("--bf16", help="Also time bf16 autocast.")] = False,
    model: BenchModelOpt = "world",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """DPO training throughput (pairs/second, reference log-probs cached) and peak memory."""
    from rlhf.bench import bench_dpo as run_bench

    figures = run_bench(
        _config(config, sets), out, steps=steps, warmup=warmup, batch_size=batch_size, bf16=bf16, model=model
    )
    for row in figures["runs"]:
        typer.echo(
            f"{row['precision']}: {row['pairs_per_second']:.1f} pairs/s ({row['seconds_per_step'] * 1000:.1f} ms/step); "
            f"with the one-off reference pass over one epoch {row['pairs_per_second_with_reference_pass']:.1f} pairs/s; "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB"
        )
    typer.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- label

DbOpt = Annotated[
    str,
    typer.Option(
        "--db", help="Feedback database: sqlite:///path/file.db or postgresql+psycopg://user@host/db."
    ),
]
DEFAULT_DB = "sqlite:///rlhf-feedback.db"
ProjectOpt = Annotated[str, typer.Option(help="Project (a separate queue of tasks) in the database.")]


@label_app.command("serve")
def label_serve(
    db: DbOpt = DEFAULT_DB,
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (use PostgreSQL for more than one).")
    ] = 1,
    project: ProjectOpt = "default",
    guidelines: Annotated[
        Path | None, typer.Option(help="Text file shown at the top of the guidelines page.")
    ] = None,
    gold_threshold: Annotated[
        float, typer.Option(min=0, max=1, help="Onboarding gold accuracy below which a labeller is flagged.")
    ] = 0.7,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(
            "--secure-cookies/--no-secure-cookies", help="Force the Secure cookie flag (default: when HTTPS)."
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            help="Reverse proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses; "
            "e.g. 127.0.0.1 for a proxy on this machine). Default: none, so clients cannot pick the address "
            "the sign-in limit counts."
        ),
    ] = "",
) -> None:
    """Run the labelling web app (creates the database and schema when missing)."""
    from sqlalchemy.engine import make_url

    from rlhf.io import read_text
    from rlhf.web.app import WebSettings
    from rlhf.web.serve import serve

    if guidelines is not None:
        read_text(guidelines)  # fail here, not on the page: missing, not a file, or not UTF-8
    settings = WebSettings(
        db_url=db,
        project=project,
        gold_accuracy_threshold=gold_threshold,
        secure_cookies=secure_cookies,
        guidelines_file=str(guidelines or ""),
    )
    from rlhf.feedback.db import normalize_url

    shown = make_url(normalize_url(db)).render_as_string(hide_password=True)  # never print a password
    typer.echo(
        f"labelling app on http://{host}:{port} (database {shown}, {workers} worker(s)); Ctrl+C stops it"
    )
    serve(settings, host=host, port=port, workers=workers, forwarded_allow_ips=forwarded_allow_ips)


@label_app.command("add-labeller")
def label_add_labeller(
    name: Annotated[str, typer.Argument(help="Unique name (letters, digits, _ . @ -).")],
    db: DbOpt = DEFAULT_DB,
    admin: Annotated[bool, typer.Option("--admin", help="An admin: dashboard, exports, admin API.")] = False,
) -> None:
    """Create a labeller and print their sign-in token (shown once: only its hash is stored)."""
    from rlhf.feedback.store import FeedbackStore

    store = FeedbackStore(db)
    labeller, token = store.add_labeller(name, role="admin" if admin else "labeller")
    store.close()
    typer.echo(f"created {labeller.role} {labeller.name!r}; token (shown once, keep it secret):")
    typer.echo(token)


def _labeller_named(store, name: str):
    labeller = store.labeller_by_name(name)
    if labeller is None:
        raise UserError(f"no labeller named {name!r} (rlhf label labellers lists them)")
    return labeller


@label_app.command("labellers")
def label_labellers(db: DbOpt = DEFAULT_DB) -> None:
    """List the accounts: name, role, and whether each is active, onboarded or flagged."""
    from rlhf.feedback.store import FeedbackStore

    store = FeedbackStore(db)
    for x in store.labellers():
        state = ", ".join(
            word
            for word, on in (
                ("inactive", not x.active),
                ("onboarding", not x.onboarded),
                ("flagged", x.flagged),
            )
            if on
        )
        typer.echo(f"{x.name}\t{x.role}\t{state or 'active'}")
    store.close()


@label_app.command("deactivate")
def label_deactivate(
    name: Annotated[str, typer.Argument(help="The labeller's name.")], db: DbOpt = DEFAULT_DB
) -> None:
    """Refuse a labeller's token and sessions from their next request; their held tasks go back to the queue."""
    _set_active(db, name, False)
    typer.echo(
        f"deactivated {name!r}: their token and sessions are refused (rlhf label activate {name} undoes it)"
    )


@label_app.command("activate")
def label_activate(
    name: Annotated[str, typer.Argument(help="The labeller's name.")], db: DbOpt = DEFAULT_DB
) -> None:
    """Let a deactivated labeller sign in again with their token (old sessions stay ended)."""
    _set_active(db, name, True)
    typer.echo(f"activated {name!r}")


def _set_active(db: str, name: str, active: bool) -> None:
    from rlhf.feedback.store import FeedbackStore

    store = FeedbackStore(db)
    try:
        store.set_active(_labeller_named(store, name).id, active)
    finally:
        store.close()


@label_app.command("rotate-token")
def label_rotate_token(
    name: Annotated[str, typer.Argument(help="The labeller's name.")], db: DbOpt = DEFAULT_DB
) -> None:
    """Give a labeller a new token and print it (shown once); the old token and its sessions stop working."""
    from rlhf.feedback.store import FeedbackStore

    store = FeedbackStore(db)
    _, token = store.rotate_token(_labeller_named(store, name).id)
    store.close()
    typer.echo(f"new token for {name!r} (shown once, keep it secret; the old one no longer works):")
    typer.echo(token)


@label_app.command("import")
def label_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL: prompt, responses, optional kind/priority/labels_wanted/objective/gold (docs/labelling.md)."
        ),
    ],
    objective: Annotated[
        str | None,
        typer.Option(help="Reward head the labels train (e.g. helpful, harmless), for rows naming none."),
    ] = None,
    allow_repeats: Annotated[
        bool, typer.Option(help="Add rows that ask a task already in the store again (refused by default).")
    ] = False,
    db: DbOpt = DEFAULT_DB,
    project: ProjectOpt = "default",
) -> None:
    """Add one labelling task per row of a prompts/responses JSONL file (all rows or none)."""
    from rlhf.feedback.exchange import import_file
    from rlhf.feedback.store import FeedbackStore, StoreSettings

    store = FeedbackStore(db, StoreSettings(project=project))
    count = import_file(store, file, objective, allow_repeats)
    store.close()
    typer.echo(f"imported {count} tasks from {file}")


@label_app.command("export")
def label_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    kind: Annotated[
        str, typer.Option(help="pairs | rankings | ratings | binary (unpaired rows, KTO format)")
    ] = "pairs",
    db: DbOpt = DEFAULT_DB,
    project: ProjectOpt = "default",
) -> None:
    """Write the labels as a preference file for `rlhf reward train --data FILE`."""
    from rlhf.feedback.exchange import export_file
    from rlhf.feedback.store import FeedbackStore, StoreSettings

    store = FeedbackStore(db, StoreSettings(project=project))
    count = export_file(store, kind, out)
    store.close()
    typer.echo(f"wrote {count} {kind} rows to {out}")


@bench_app.command("serve")
def bench_serve(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/serve.json"
    ),
    labellers: Annotated[int, typer.Option(min=1, help="Concurrent simulated labellers.")] = 50,
    labels: Annotated[int, typer.Option(min=1, help="Labels to submit in all (one per task).")] = 5000,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: a temporary SQLite file).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Labels per second to offer in all, paced (default: as fast as the server answers)."
        ),
    ] = None,
) -> None:
    """Simulated labellers against a real server on loopback: throughput, latency, CPU, and a lost/duplicate check."""
    from rlhf.web.bench import bench_serve as run_bench

    f = run_bench(out, n_labellers=labellers, n_labels=labels, db_url=db, workers=workers, rate=rate)
    paced = f" (offered {rate:g}/s, schedule lag p99 {f['schedule_lag_ms_p99']:.1f} ms)" if rate else ""
    typer.echo(
        f"{f['labels_stored']} labels stored of {f['labels_expected']} ({'ok' if f['ok'] else 'MISMATCH'}), "
        f"{f['labels_per_second']:.0f} labels/s{paced}; POST /api/labels p50/p95/p99 {f['label_ms_p50']:.1f}/"
        f"{f['label_ms_p95']:.1f}/{f['label_ms_p99']:.1f} ms, GET /api/tasks/next p50/p95/p99 "
        f"{f['next_task_ms_p50']:.1f}/{f['next_task_ms_p95']:.1f}/{f['next_task_ms_p99']:.1f} ms; CPU: server "
        f"{f['server_cpu_seconds']:.1f} s ({f['server_cpu_ms_per_label']:.2f} ms/label), load generator "
        f"{f['loadgen_cpu_seconds']:.1f} s"
    )
    typer.echo(f"wrote {out}")
    if not f["ok"]:
        raise UserError(f"labels lost or duplicated: {f}")


# ----------------------------------------------------------------------------- active learning, labellers

feedback_app = typer.Typer(
    help="Labeller statistics: agreement, reliability weights, disagreement with gold.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")


@bench_app.command("active")
def bench_active(
    out: Annotated[Path, typer.Option("--out", "-o", help="Figures: <out>.json and <out>.png.")] = Path(
        "bench/active"
    ),
    results: Annotated[
        Path | None, typer.Option(help="Also write the summary in the results schema here.")
    ] = Path("results/active.json"),
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: random,disagreement,entropy,bald,diverse,cost; 'ranking:NAME' (e.g. "
            "ranking:random, ranking:bald) asks for K-way rankings of K-sets instead of comparisons; "
            "'routed:NAME' (NAME random, disagreement, entropy or bald) also chooses who answers."
        ),
    ] = "random,disagreement,entropy,bald,diverse,cost",
    ranking_size: Annotated[
        int, typer.Option(min=2, help="Responses per ranking (K), 'ranking:' methods.")
    ] = 6,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per method.")] = 5,
    initial: Annotated[int, typer.Option(min=1, help="Random labels before the first acquisition.")] = 250,
    batch: Annotated[int, typer.Option(min=1, help="Labels acquired per round.")] = 250,
    max_labels: Annotated[int, typer.Option(min=1, help="Labels at the end of a run.")] = 2000,
    target: Annotated[
        int, typer.Option(min=1, help="Random's accuracy at this many labels is the bar.")
    ] = 2000,
    pool: Annotated[int, typer.Option(min=1, help="Candidate pairs per seed.")] = 6000,
    test: Annotated[int, typer.Option(min=1, help="Held-out gold test pairs.")] = 1000,
    train: Annotated[
        str, typer.Option(help="full (fine-tune each round) or heads (frozen backbone).")
    ] = "full",
    epochs: Annotated[float, typer.Option(help="Reward-model epochs per round ('full').")] = 3.0,
    ensemble: Annotated[int, typer.Option(min=1, help="Ensemble heads.")] = 4,
    model: Annotated[
        str,
        typer.Option(
            help="Reward-model backbone: 'world' (the built world LM), or a causal LM or reward-model "
            "directory (e.g. a preference-model-pretrained one)."
        ),
    ] = "world",
    labellers: Annotated[int, typer.Option(min=1, help="Panel size, special labellers included.")] = 11,
    spammers: Annotated[int, typer.Option(min=0, help="Panel labellers answering at random.")] = 1,
    length_judges: Annotated[int, typer.Option(min=0, help="Panel labellers judging by length.")] = 1,
    refusal: Annotated[int, typer.Option(min=0, help="Panel labellers of the refusal guideline.")] = 1,
    gold_share: Annotated[
        float, typer.Option(help="'routed:' methods: share of each batch asked as gold questions (counted).")
    ] = 0.0,
    route_floor: Annotated[
        float, typer.Option(help="'routed:': least share of a batch per labeller.")
    ] = 0.02,
    route_cap: Annotated[
        float, typer.Option(help="'routed:': largest share of a batch per labeller.")
    ] = 0.25,
    route_pessimism: Annotated[
        float, typer.Option(help="'routed:': route on estimated rationality minus this many sds.")
    ] = 1.0,
) -> None:
    """Random vs acquisition functions on the toy world: gold accuracy against labels, labels to match random.
    'routed:NAME' methods choose the labeller with the query (labeller-aware BALD per second)."""
    import json

    from rlhf.active import ActiveConfig, results_record
    from rlhf.active import bench_active as run_bench

    cfg = ActiveConfig(
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        seeds=seeds, initial_labels=initial, batch_labels=batch, max_labels=max_labels,
        target_labels=target, pool_size=pool, test_size=test, train=train, epochs=epochs,
        ensemble_size=ensemble, model=model, ranking_size=ranking_size, labellers=labellers,
        spammers=spammers, length_judges=length_judges, refusal_labellers=refusal, gold_share=gold_share,
        route_floor=route_floor, route_cap=route_cap, route_pessimism=route_pessimism,
    )  # fmt: skip
    f = run_bench(cfg, out, log=typer.echo)
    typer.echo(f"random reaches {f['random_accuracy']} gold accuracy at {f['random_labels']} labels")
    for name, m in f["methods"].items():
        seconds = m.get("seconds_to_match_random")
        timing = (
            f", labelling seconds to match random {seconds:.0f} of {f['random_seconds']:.0f}"
            if seconds
            else ""
        )
        typer.echo(
            f"{name}: labels to match random {m['labels_to_match_random']}{timing}, final {m['curve'][-1]}"
        )
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(results_record(f), indent=2))
        typer.echo(f"wrote {results}")
    typer.echo(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def _names_list(names: list[str], most: int = 5) -> str:
    return (
        ", ".join(names) if len(names) <= most else f"{', '.join(names[:most])} and {len(names) - most} more"
    )


@feedback_app.command("reliability")
def feedback_reliability(
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="Preference pairs and/or binary rows (JSONL) with labeller_id."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the rows with reliability `weight` here.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the full report (JSON) here.")] = None,
    gold: Annotated[
        bool, typer.Option("--gold", help="Add the disagreement report against the world's gold judge.")
    ] = False,
    db: Annotated[
        str | None, typer.Option("--db", help="Mark flagged labellers in this feedback database.")
    ] = None,
    examples: Annotated[int, typer.Option(min=0, help="Disagreement examples to keep.")] = 10,
    reward_model: Annotated[
        Path | None,
        typer.Option(
            "--reward-model",
            help="Explain the labels by this reward model's utilities (the question's head per row "
            "`objective`, the other heads, length): rationality identified from each labeller's own labels. "
            "Without it: free utilities per response, which need overlap between labellers.",
        ),
    ] = None,
) -> None:
    """Per-labeller rationality and position bias, weights, flags; with --gold, where the labellers'
    majority disagrees with gold."""
    from rlhf.feedback.labellers import disagreement_report, flag_in_store, reliability_report, weighted_rows
    from rlhf.io import read_jsonl, write_json, write_jsonl

    rows = read_jsonl(data)
    rel = (
        reliability_report(rows) if reward_model is None else _reward_model_quality(rows, reward_model, data)
    )
    if not rel["labellers"]:
        other = sorted({kind for r in rows for kind in ("ranking", "rating") if kind in r})
        raise UserError(
            f"{data}: no pair rows (chosen, rejected) or binary rows (completion, label) with a labeller_id to fit"
            + (
                f"; it holds {' and '.join(k + 's' for k in other)}: reliability is fitted on the labels of "
                "comparison and binary tasks, exported with `rlhf label export --kind pairs` or `--kind binary`"
                if other
                else ""
            )
        )
    if reward_model is None:
        typer.echo(
            f"{rel['n_labels']} labels, {rel['n_items']} responses; position bias fitted: {rel['position_bias_fitted']}"
        )
    for row in sorted(rel["labellers"], key=lambda r: r["rationality"]):
        flag = "  FLAGGED" if row["flagged"] else ""
        if reward_model is not None:
            from rlhf.feedback.quality_report import judges_by

            flag = f"  FLAGGED ({', '.join(row['flag_reasons'])})" if row["flagged"] else ""

            typer.echo(f"{row['labeller_id']:>24}  rationality {row['rationality']:6.2f} ± {row['rationality_sd']:.2f}  "
                       f"labels {row['n_labels']:5d}  weight {row['weight']:.2f}  judges by {judges_by(row)}{flag}")  # fmt: skip
            continue
        typer.echo(
            f"{row['labeller_id']:>24}  rationality {row['rationality']:6.2f}  bias {row['position_bias']:+.2f}  "
            f"labels {row['n_labels']:5d}  shared {row['shared_labels']:5d}  weight {row['weight']:.2f}{flag}"
        )
    unshared = [r for r in rel["labellers"] if r.get("shared_labels", r["n_labels"]) < 0.5 * r["n_labels"]]
    if reward_model is None and len(rel["labellers"]) > 1 and unshared:
        typer.echo(
            f"warning: {_names_list([r['labeller_id'] for r in unshared])} answered mostly comparisons no other "
            "labeller answered ('shared' counts the others): there the fit cannot tell care from noise, and "
            "a labeller with many unshared labels looks more rational than one who agrees on every shared "
            "comparison; ask more labellers per comparison (loop.overlap_share, labels_wanted) before "
            "trusting these weights, or give --reward-model DIR (rationality from a reward model's utilities)",
            err=True,
        )
    full = {"reliability": rel}
    if gold:
        dis = disagreement_report(rows, examples=examples)
        full["disagreement"] = dis
        alpha = _number(dis["krippendorff_alpha_nominal"], ".3f")
        if dis["krippendorff_alpha_undefined"]:
            alpha += f" ({dis['krippendorff_alpha_undefined']})"
        typer.echo(
            f"majority disagrees with gold on {dis['majority_disagrees_with_gold']} of {dis['majority_decided']} "
            f"decided pairs ({_number(dis['disagreement_rate'], '.1%')}); Krippendorff's alpha (nominal) "
            f"{alpha}; labeller agreement with gold {_number(dis['agreement_with_gold'], '.3f')}"
        )
    if db is not None:
        from rlhf.feedback.store import FeedbackStore

        store = FeedbackStore(db)
        n = flag_in_store(store, [r["labeller_id"] for r in rel["labellers"] if r["flagged"]])
        store.close()
        typer.echo(f"flagged {n} labellers in {db}")
    if out is not None:
        typer.echo(f"wrote {write_jsonl(out, weighted_rows(rows, rel))} weighted rows to {out}")
    if report is not None:
        write_json(report, full)  # an undefined statistic is null, not NaN (invalid JSON)
        typer.echo(f"wrote {report}")


def _reward_model_quality(rows: list[dict], reward_model: Path, data: Path) -> dict:
    """`rlhf feedback reliability --reward-model`: the reward-model quality report, its header line."""
    from rlhf.feedback.quality_report import reward_model_report

    rel = reward_model_report(rows, reward_model, str(data))
    typer.echo(f"{rel['n_labels']} labels scored by {reward_model} (heads {', '.join(rel['heads'])}); "
               f"position bias fitted: {rel['position_bias_fitted']}"
               + (f"; {rel['rows_not_used']} rows not used (ties, binary, no labeller_id)" if rel["rows_not_used"] else ""))  # fmt: skip
    return rel


def _number(value: float, spec: str) -> str:
    """A statistic as text; NaN (undefined on these labels, e.g. alpha when all agree) as 'undefined'."""
    return format(value, spec) if math.isfinite(value) else "undefined"


@feedback_app.command("panel-labels")
def feedback_panel_labels(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL of labelled pairs.")],
    pairs: Annotated[int, typer.Option(min=1, help="Corpus pairs; each gets 3 labels.")] = 700,
    seed: Annotated[int, typer.Option(help="Seed of the panel, the pairs and the answers.")] = 0,
) -> None:
    """World pairs labelled by a noisy panel (30% spammers, 10% length-judging), with chosen_position."""
    from rlhf.feedback.labellers import noisy_panel_labels
    from rlhf.io import write_jsonl

    _, rows = noisy_panel_labels(seed, pairs)
    typer.echo(f"wrote {write_jsonl(out, rows)} labels to {out}")


@bench_app.command("reliability")
def bench_reliability(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the figures.")] = Path(
        "bench/reliability.json"
    ),
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (panel, pairs, answers, model).")] = 3,
    pairs: Annotated[int, typer.Option(min=1, help="Corpus pairs per seed, 3 labels each.")] = 700,
    train: Annotated[str, typer.Option(help="full (fine-tune) or heads (frozen backbone).")] = "heads",
    epochs: Annotated[float, typer.Option(help="Reward-model epochs ('full').")] = 3.0,
) -> None:
    """Reward-model gold accuracy with vs without reliability weights on a panel with 30% spammers."""
    import json

    from rlhf.feedback.labellers import reliability_experiment

    f = reliability_experiment(seeds=seeds, n_pairs=pairs, train=train, epochs=epochs, log=typer.echo)
    typer.echo(
        f"mean gold accuracy: unweighted {f['mean_unweighted']:.3f}, weighted {f['mean_weighted']:.3f}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(f, indent=2))
    typer.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- closed loop, report, demo


@app.command("loop")
def loop_run(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (rounds, labels, report).")
    ] = None,
    labellers: Annotated[
        str | None,
        typer.Option("--labellers", help="panel (simulated) or web (people, via rlhf label serve)."),
    ] = None,
    algorithm: Annotated[
        str | None, typer.Option("--algorithm", help="Policy update: ppo, dpo or ilql.")
    ] = None,
    feedback: Annotated[
        str | None,
        typer.Option("--feedback", help="pairwise (which is better?) or binary (is this one good or bad?)."),
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, help="Number of rounds.")] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--db", help="Feedback store URL, as for rlhf label (default: sqlite in the run directory)."
        ),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out: finished rounds and phases are kept.")
    ] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write <out>/report.html at the end.")
    ] = True,
) -> None:
    """Iterative online RLHF: rounds of sample, acquire, label, reward model, policy update, evaluation."""
    from rlhf.loop import run_loop

    cfg = _config(config, sets)
    _apply(cfg.loop, labellers=labellers, algorithm=algorithm, feedback=feedback, rounds=rounds, store=store)
    _set_seed_and_require_out(cfg, seed, out, "run")
    result = run_loop(cfg, out, resume=resume, show_progress=cfg.run.progress, log=typer.echo)
    from rlhf.evaluation.policy import describe_eval

    typer.echo(f"initial policy: {describe_eval(result.rounds[0]['eval'])}")
    typer.echo(f"after round {result.rounds[-1]['round']}: {describe_eval(result.rounds[-1]['eval'])}")
    if report:
        from rlhf.evaluation.report import write_report

        typer.echo(f"report: {write_report(out)}")


@app.command("report")
def report_write(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of rlhf loop or rlhf demo.")],
    active_results: Annotated[
        Path | None,
        typer.Option("--active-results", help="An `rlhf bench active` JSON to plot beside the run."),
    ] = None,
) -> None:
    """Write RUN_DIR/report.html with PNG plots (rewards, KL, reward-model accuracy, frontier, labellers, samples)."""
    from rlhf.evaluation.report import write_report

    typer.echo(f"report: {write_report(run_dir, active_results)}")


@app.command("frontier")
def frontier_sweep(
    reward: Annotated[
        str, typer.Option("--reward", "-r", help="Reward model with helpful and harmless heads.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for frontier.json, frontier.png and policies.")
    ],
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", "-p", help="Initial policy of every sweep point (default: loop.policy, 'world')."
        ),
    ] = None,
    prompts: Annotated[
        str | None,
        typer.Option("--prompts", help="Prompt file (field 'prompt'); default: loop.prompts, the world's."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Harm weights of the weighted sum, e.g. 0,1,3.")
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option("--thresholds", help="Safe RLHF cost bounds, e.g. -0.5,-1 (normalised).")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Train PPO policies that trade helpfulness for harmlessness differently; plot the frontier."""
    from rlhf.evaluation.frontier import run_frontier

    cfg = _config(config, sets)
    if seed is not None:
        cfg.run.seed = seed
    _apply(cfg.loop, policy=policy, prompts=prompts)
    for name, text in (("harm_weights", weights), ("cost_thresholds", thresholds)):
        if text is not None:
            try:
                setattr(cfg.frontier, name, [float(v) for v in text.split(",") if v.strip()])
            except ValueError:
                raise UserError(
                    f"--{name.split('_')[0]}s: expected numbers separated by commas, got {text!r}"
                ) from None
    run_frontier(cfg, cfg.frontier, reward, out, cfg.run.progress, typer.echo)
    typer.echo(f"wrote {out / 'frontier.json'} and {out / 'frontier.png'}")


@app.command("demo")
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where the run, report.html and summary.json go.")
    ] = Path("runs/demo"),
    config: ConfigOpt = None,
    sets: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted demo in --out.")] = False,
    frontier: Annotated[
        bool, typer.Option("--frontier/--no-frontier", help="Train the frontier sweep.")
    ] = True,
    active_results: Annotated[
        Path | None, typer.Option("--active-results", help="An `rlhf bench active` JSON for the report.")
    ] = None,
) -> None:
    """The end-to-end demo on the bundled world: a short closed loop, then report.html and summary.json."""
    from rlhf.demo import format_summary, run_demo

    summary = run_demo(out, str(config) if config else None, sets or [], resume=resume, frontier=frontier,
                       active_results=active_results, log=typer.echo)  # fmt: skip
    typer.echo(format_summary(summary, out))


# ----------------------------------------------------------------------------- entry point


def _flags_without_metavar(command: Any) -> None:
    """Typer's help shows every flag with a type, `--normalize <bool>`, as if it took a value; flags
    (and -h/--help) take none, so they show none, in `command` and every command below it."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _flags_without_metavar(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user mistakes become one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("RLHF_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        # standalone mode: Typer/Click print usage errors and --help themselves and exit via SystemExit.
        command = typer.main.get_command(app)
        _flags_without_metavar(command)
        command(args=args, prog_name="rlhf", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserError as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())
        print(f"rlhf: error: {message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A path the user gave that cannot be read or written (permissions, a full disk, ...).
        if debug:
            raise
        print(f"rlhf: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
