"""The `rlhf` command line: thin Typer commands that parse options and call library functions.

User mistakes (`UserError`) print one line on stderr and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

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
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(model_app, name="model")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (sections as in `rlhf config show`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one config key, e.g. --set world.steps=500 (repeatable)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (overrides the config's seed).")]


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
) -> None:
    """Sample responses of a causal LM to world prompts and print them with their gold scores."""
    from rlhf.world.report import sample_table

    cfg = _config(config, sets)
    rows, summary = sample_table(
        cfg, model, n, seed if seed is not None else cfg.run.seed, temperature, max_new_tokens
    )
    _print_samples(rows, summary)
    if jsonl is not None:
        from rlhf.io import write_jsonl

        write_jsonl(jsonl, rows)
        typer.echo(f"wrote {len(rows)} rows to {jsonl}")


def _print_samples(rows: list[dict], summary: dict) -> None:
    from rich.table import Table

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
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Export world prompts, preference pairs (prompt/chosen/rejected) or scored responses as JSONL."""
    from rlhf.world.export import export

    cfg = _config(config, sets)
    count = export(cfg, what, out, n, seed if seed is not None else cfg.run.seed, judge=judge, model=model)
    typer.echo(f"wrote {count} {what} rows to {out}")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user mistakes become one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("RLHF_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        # standalone mode: Typer/Click print usage errors and --help themselves and exit via SystemExit.
        app(args=args, prog_name="rlhf", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserError as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())
        print(f"rlhf: error: {message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
