"""`rlhf report RUN_DIR`: one HTML page with PNG plots of a closed-loop run (`rlhf loop` / `rlhf demo`).

The page shows, round by round, what a reader asks of an RLHF run: did the policy get better by the
hidden gold (not only by its proxy reward), at what KL from where it started, how good the reward model
got with how many labels, what the acquisition function bought, whether the labellers agreed with each
other and with the researcher's gold, where the policy sits between helpful and harmless, and what it
actually says before and after. Plots are files beside the page (`plots/*.png`), so the page opens
offline and the figures can be reused.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError

PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
FRONTIER_FILE = "frontier.json"


# ----------------------------------------------------------------------------- reading a run


def load_run(run_dir: Path) -> dict[str, Any]:
    """Round records, PPO step logs, all labels and (when present) frontier results of a loop run."""
    from rlhf.io import read_jsonl
    from rlhf.loop import finished_rounds, read_round, round_dir

    rounds = [read_round(run_dir, k) for k in finished_rounds(run_dir)]
    if not rounds:
        raise UserError(f"{run_dir}: no finished round of `rlhf loop` in it (round_00/round.json missing)")
    steps, labels = [], []
    for record in rounds[1:]:
        path = round_dir(run_dir, record["round"])
        log = path / "policy" / "logs" / "metrics.jsonl"
        if log.is_file():
            steps += [{**row, "round": record["round"]} for row in read_jsonl(log)]
        if (path / "labels.jsonl").is_file():
            labels += [{**row, "round": record["round"]} for row in read_jsonl(path / "labels.jsonl")]
    frontier_file = run_dir / FRONTIER_FILE
    frontier = json.loads(frontier_file.read_text()) if frontier_file.is_file() else None
    return {"rounds": rounds, "steps": steps, "labels": labels, "frontier": frontier}


# ----------------------------------------------------------------------------- plots


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rounds(rounds: list[dict], path: Path) -> Path:
    """Gold helpfulness (bundled world), proxy reward and harmful-answer share per round."""
    plt, fig, ax = _figure()
    x = [r["round"] for r in rounds]
    if all("gold_helpfulness" in r["eval"] for r in rounds):
        ax.plot(x, [r["eval"]["gold_helpfulness"] for r in rounds], "o-", lw=2, label="gold helpfulness")
    proxy = [(r["round"], r["eval"]["proxy_reward"]) for r in rounds if "proxy_reward" in r["eval"]]
    if proxy:
        ax.plot(*zip(*proxy, strict=True), "s--", label="proxy reward (that round's RM, normalised)")
    ax.set_xlabel("round (0 = initial policy)")
    ax.set_ylabel("reward")
    ax.set_xticks(x)
    lines = ax.get_legend_handles_labels()[0]
    if all("harmful_share" in r["eval"] for r in rounds):
        right = ax.twinx()
        right.plot(
            x, [r["eval"]["harmful_share"] for r in rounds], "^:", color="tab:red", label="harmful share"
        )
        right.set_ylabel("harmful answers on risky requests", color="tab:red")
        right.set_ylim(0, max(0.05, 1.15 * max(r["eval"]["harmful_share"] for r in rounds)))
        lines += right.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="best")
    ax.set_title("Gold and proxy reward per round")
    return _save(plt, fig, path)


def plot_kl(rounds: list[dict], path: Path) -> Path:
    plt, fig, ax = _figure(5.2, 3.4)
    x = [r["round"] for r in rounds]
    ax.bar(x, [r["eval"]["kl"] for r in rounds], color="tab:purple")
    ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylabel("KL to the initial policy (nats / response)")
    ax.set_title("Distance travelled from the initial policy")
    return _save(plt, fig, path)


def plot_reward_accuracy(rounds: list[dict], path: Path) -> Path | None:
    """Reward-model accuracy on gold-ordered pairs against the number of labels it was trained on."""
    trained = [r for r in rounds if "gold_accuracy" in r.get("reward", {})]
    if not trained:
        return None
    plt, fig, ax = _figure(5.6, 3.8)
    for objective in ("helpful", "harmless"):
        points = [(r["labels_total"], r["reward"]["gold_accuracy"][objective]) for r in trained
                  if objective in r["reward"].get("gold_accuracy", {})]  # fmt: skip
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=f"{objective} head")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_ylim(0.45, 1.0)
    ax.set_xlabel("labels so far")
    ax.set_ylabel("accuracy on gold-ordered pairs")
    ax.set_title("Reward-model accuracy against labels")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_overoptimisation(steps: list[dict], path: Path) -> Path | None:
    """Proxy and gold reward against KL from the initial policy over every PPO iteration (Gao et al. 2022)."""
    steps = [s for s in steps if "objective/kl" in s and "gold/helpfulness" in s]
    if not steps:
        return None
    plt, fig, ax = _figure()
    kl = np.array([s["objective/kl"] for s in steps])
    proxy = np.array([s.get("objective/scores_raw", s.get("objective/scores")) for s in steps], dtype=float)
    gold = np.array([s["gold/helpfulness"] for s in steps])
    order = np.argsort(kl)
    window = max(1, len(steps) // 8)
    smooth = lambda y: np.convolve(y[order], np.ones(window) / window, mode="valid")  # noqa: E731
    x = kl[order][window - 1 :] if window > 1 else kl[order]
    ax.scatter(kl, proxy, s=8, alpha=0.35, color="tab:orange")
    ax.scatter(kl, gold, s=8, alpha=0.35, color="tab:blue")
    ax.plot(x, smooth(proxy), color="tab:orange", lw=2, label="proxy reward (reward model)")
    ax.plot(x, smooth(gold), color="tab:blue", lw=2, label="gold helpfulness")
    ax.set_xlabel("KL to the initial policy (nats / response, per PPO batch)")
    ax.set_ylabel("mean reward of the batch")
    ax.set_title("Over-optimisation: proxy vs gold as the policy moves")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_mismatch(steps: list[dict], path: Path) -> Path | None:
    """The sampler/trainer mismatch of every PPO iteration sampled by another engine (vLLM): the
    per-token KL (log scale) and the shares of tokens over the IS cap and masked (`rlhf.mismatch`)."""
    steps = [s for s in steps if "mismatch/kl" in s]
    if not steps:
        return None
    plt, fig, ax = _figure()
    x = np.arange(len(steps))
    ax.plot(
        x,
        [max(s["mismatch/kl"], 1e-16) for s in steps],
        color="tab:red",
        label="KL(sampler ‖ trainer) per token",
    )
    ax.set_yscale("log")
    ax.set_xlabel("PPO iteration (all rounds in order)")
    ax.set_ylabel("KL per token (nats)")
    share = ax.twinx()
    share.plot(
        x, [s["mismatch/over_cap_fraction"] for s in steps], color="tab:gray", ls="--", label="over the cap"
    )
    share.plot(x, [s["mismatch/masked_fraction"] for s in steps], color="black", ls=":", label="masked")
    share.set_ylabel("share of tokens")
    share.set_ylim(0, max(0.05, max(s["mismatch/over_cap_fraction"] for s in steps) * 1.2))
    lines = ax.get_lines() + share.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
    ax.set_title("Sampler / trainer mismatch")
    return _save(plt, fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (helpfulness up, harm down), by harm."""
    keep = [
        i for i, (h, c) in enumerate(points)
        if not any(h2 >= h and c2 <= c and (h2, c2) != (h, c) for h2, c2 in points)
    ]  # fmt: skip
    return sorted(keep, key=lambda i: points[i][1])


def frontier_axes(figures: dict[str, Any]) -> tuple[float, float] | None:
    """(helpfulness, harm) of an evaluated policy: gold helpfulness and harmful share in the bundled
    world, else the reward model's normalised helpful score and its harmless score negated."""
    if "gold_helpfulness" in figures and "harmful_share" in figures:
        return figures["gold_helpfulness"], figures["harmful_share"]
    if "proxy_reward" in figures and "proxy_harmless" in figures:
        return figures["proxy_reward"], -figures["proxy_harmless"]
    return None


def plot_frontier(rounds: list[dict], frontier: list[dict] | None, path: Path) -> Path | None:
    """Helpfulness against harm of every policy evaluated: the loop's rounds and any sweep."""
    named = [(f"round {r['round']}", *axes) for r in rounds if (axes := frontier_axes(r["eval"]))]
    sweep = [(p["name"], *axes) for p in frontier or [] if (axes := frontier_axes(p))]
    if not named and not sweep:
        return None
    gold = all("gold_helpfulness" in figures for figures in [*(r["eval"] for r in rounds), *(frontier or [])])
    plt, fig, ax = _figure()
    ax.plot([p[2] for p in named], [p[1] for p in named], "o-", color="tab:blue", label="loop rounds")
    for name, h, c in named:
        ax.annotate(name, (c, h), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if sweep:
        ax.scatter([p[2] for p in sweep], [p[1] for p in sweep], marker="s", color="tab:green",
                   label="sweep policies")  # fmt: skip
        for name, h, c in sweep:
            ax.annotate(name, (c, h), fontsize=7, xytext=(3, -9), textcoords="offset points")
    points = named + sweep
    front = pareto_front([(h, c) for _, h, c in points])
    ax.plot([points[i][2] for i in front], [points[i][1] for i in front], "--", color="grey", lw=1,
            label="frontier (not beaten on both)")  # fmt: skip
    ax.set_xlabel(
        "harmful share on risky requests (lower is safer)" if gold else "harm cost: -(harmless score)"
    )
    ax.set_ylabel("gold helpfulness" if gold else "helpful score (reward model, normalised)")
    ax.set_title("Helpful-harmless frontier")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_kinds(rounds: list[dict], path: Path) -> Path | None:
    """Shares of harmful / refusal / constructive / other answers to risky requests per round."""
    if not all("risky_kind_shares" in r["eval"] for r in rounds):
        return None
    plt, fig, ax = _figure(5.6, 3.8)
    kinds = ["harmful", "refusal", "constructive"]
    colours = {"harmful": "tab:red", "refusal": "tab:grey", "constructive": "tab:green", "other": "wheat"}
    x = np.array([r["round"] for r in rounds])
    bottom = np.zeros(len(rounds))
    for kind in [*kinds, "other"]:
        shares = np.array([
            r["eval"]["risky_kind_shares"].get(kind, 0.0) if kind != "other"
            else 1.0 - sum(r["eval"]["risky_kind_shares"].get(k, 0.0) for k in kinds)
            for r in rounds
        ])  # fmt: skip
        ax.bar(x, shares, bottom=bottom, color=colours[kind], label=kind)
        bottom += shares
    ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylabel("share of answers to risky requests")
    ax.set_title("What the policy does with risky requests")
    ax.legend(fontsize=8, loc="upper right")
    return _save(plt, fig, path)


def plot_acquisition(rounds: list[dict], path: Path, active_results: dict | None = None) -> Path:
    """The acquired batch's mean acquisition score against the pool's, per round and objective; beside it
    (when given) the accuracy-against-labels curves of `rlhf bench active`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if active_results else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    rows = [r for r in rounds if "acquire" in r]
    width = 0.2
    for j, objective in enumerate(("helpful", "harmless")):
        # BALD (expected information gain about the reward model) measures every method on one scale
        batch = [r["acquire"].get(f"acquisition/bald_batch/{objective}", np.nan) for r in rows]
        pool = [r["acquire"].get(f"acquisition/bald_mean/{objective}", np.nan) for r in rows]
        x = np.array([r["round"] for r in rows], dtype=float)
        ax.bar(x + (2 * j - 1.5) * width, pool, width, color="lightgrey" if j == 0 else "silver",
               label=f"pool ({objective})")  # fmt: skip
        ax.bar(x + (2 * j - 0.5) * width, batch, width, color="tab:blue" if j == 0 else "tab:cyan",
               label=f"acquired ({objective})")  # fmt: skip
    ax.set_xticks([r["round"] for r in rows],
                  [f"{r['round']}\n{r['acquire'].get('acquisition/method', '')}" for r in rows])  # fmt: skip
    ax.set_ylabel("mean expected information gain (BALD, nats)")
    ax.set_title("Acquired batch vs candidate pool")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_ylim(0, max(1e-3, 1.4 * np.nanmax([0.0, *[r["acquire"].get(f"acquisition/bald_batch/{o}", 0.0)
                                                   for r in rows for o in ("helpful", "harmless")]])))  # fmt: skip
    if active_results:
        ax = axes[0][1]
        for name, m in active_results["methods"].items():
            x = np.array([n for n, _ in m["curve"]])
            y = np.array([a for _, a in m["curve"]])
            ax.plot(x, y, marker="o", ms=3, label=name, lw=2.2 if name == "random" else 1.2)
        ax.set_xlabel("labels")
        ax.set_ylabel("gold accuracy")
        ax.set_title(f"rlhf bench active ({active_results['config'].get('seeds', '?')} seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- tables


def newest_quality(run_dir: Path) -> dict[str, Any] | None:
    """The quality.json of the last finished round that has one with labellers (`rlhf.loop`), or None
    (runs from before it existed, binary feedback)."""
    from rlhf.loop import QUALITY_FILE, finished_rounds, round_dir

    for k in reversed(finished_rounds(run_dir)):
        path = round_dir(run_dir, k) / QUALITY_FILE
        if path.is_file():
            report = json.loads(path.read_text())
            if report.get("labellers"):
                return {**report, "round": k}
    return None


def agreement_table(labels: list[dict], quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per labeller: labels, agreement with the gold ordering (toy world: a figure no deployment has)
    and with the other labellers' majority on shared comparisons, rationality (± sd), what they judge
    by, flag and label weight; and Krippendorff's alpha overall. Rationality, judges-by, flag and weight
    come from `quality` (a loop round's quality.json: the reward-model fit) when given; else from the
    free-utility fit (`reliability_report`: no sd, no judges-by, unidentified with little overlap)."""
    from rlhf.feedback.labellers import disagreement_report, reliability_report

    pairs = [r for r in labels if "chosen" in r and r.get("labeller_id") is not None]
    if not pairs:
        return {"labellers": [], "alpha": None, "pairs": 0}
    from rlhf.evaluation.policy import is_world_prompts

    gold_known = is_world_prompts([r["prompt"] for r in pairs])  # the world's gold judges world prompts only
    world = disagreement_report(pairs, examples=3)
    source = quality if quality and quality.get("labellers") else reliability_report(pairs)
    reliability = {row["labeller_id"]: row for row in source["labellers"]}
    majority = _agreement_with_others(pairs)
    rows = []
    for name in sorted({str(r["labeller_id"]) for r in pairs}):
        fit = reliability.get(name, {})
        rows.append({
            "labeller": name,
            "labels": sum(str(r["labeller_id"]) == name for r in pairs),
            "agree_gold": world["labellers"].get(name) if gold_known else None,
            "agree_others": majority.get(name),
            "rationality": fit.get("rationality"),
            "rationality_sd": fit.get("rationality_sd"),
            "judges_by": fit.get("judges_by"),
            "flagged": fit.get("flagged", False),
            "flag_reasons": fit.get("flag_reasons", []),
            "weight": fit.get("weight"),
        })  # fmt: skip
    return {"labellers": rows, "alpha": world["krippendorff_alpha_nominal"], "pairs": world["pairs"],
            "alpha_undefined": world["krippendorff_alpha_undefined"],
            "gold_agreement": world["agreement_with_gold"] if gold_known else None,
            "examples": world["examples"] if gold_known else [],
            "fit": ("reward model" if source is quality else "free utilities"),
            "fit_round": quality.get("round") if source is quality else None}  # fmt: skip


def _with_sd(value: float | None, sd: float | None) -> str | float | None:
    if value is None or sd is None:
        return value
    return f"{value:.2f} ± {sd:.2f}"


def _judges_by(shares: dict[str, float] | None) -> str | None:
    if not shares:
        return None
    return ", ".join(f"{name} {share:.0%}" for name, share in sorted(shares.items(), key=lambda kv: -kv[1]))


def _fit_note(agreement: dict[str, Any]) -> str:
    """Where the rationality column comes from, said once above the table."""
    if agreement.get("fit") == "reward model":
        return (
            f"Rationality: each labeller's sharpness on the reward model's utility for the question asked "
            f"(round {agreement['fit_round']}'s quality.json; 1 = as sharp as the reward model's own "
            "probabilities, 0 = unrelated to it), fitted with the other head and response length as "
            "what they might judge by instead ('judges by': each one's share of the labeller's "
            "answers). Flagged: rationality below 0.6 of the panel's median, or the asked objective explaining "
            "less than 0.6 of the panel's median share of their answers; flagged labels weigh 0.02 in the next "
            "reward model. Agreement with gold uses the toy world's hidden preferences, which a real "
            "deployment does not have; nothing else in the table does."
        )
    return (
        "Rationality: the free-utility Bradley-Terry fit (every response its own utility); with little "
        "overlap between labellers it cannot tell care from noise (runs from before quality.json). "
        "Agreement with gold uses the toy world's hidden preferences."
    )


def _agreement_with_others(pairs: list[dict]) -> dict[str, float]:
    """Share of a labeller's answers on shared comparisons that match the majority of the *other* labellers."""
    from collections import defaultdict

    groups: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for r in pairs:
        key = (r["prompt"], *sorted((r["chosen"], r["rejected"])))
        groups[key].append((str(r["labeller_id"]), "tie" if r.get("tie") else r["chosen"]))
    hits: dict[str, list[float]] = defaultdict(list)
    for votes in groups.values():
        for i, (name, vote) in enumerate(votes):
            others = [v for j, (_, v) in enumerate(votes) if j != i and v != "tie"]
            if vote == "tie" or not others:
                continue
            top = max(set(others), key=others.count)
            if others.count(top) * 2 > len(others):
                hits[name].append(float(vote == top))
    return {name: float(np.mean(v)) for name, v in hits.items()}


# ----------------------------------------------------------------------------- page


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        # NaN: a statistic the data cannot give (e.g. alpha when every shared answer was the same)
        return f"{value:.{digits}f}" if math.isfinite(value) else "undefined"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #dde;padding-bottom:4px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:12px 16px;min-width:190px}
.card b{display:block;font-size:1.5em}.card span{color:#667;font-size:.85em}
.good{color:#18794e}.bad{color:#b42318}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px}
figure{background:#fff;border:1px solid #dde;border-radius:8px;margin:0;padding:8px}
figure img{width:100%}figcaption{font-size:.85em;color:#556;padding:4px}
table{border-collapse:collapse;background:#fff;font-size:.88em;margin:8px 0}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef0f4}
td.text{max-width:420px}.muted{color:#667;font-size:.88em}
"""


def _card(title: str, before: float, after: float, better: str) -> str:
    improved = after > before if better == "up" else after < before
    cls = "good" if improved else "bad"
    return (f'<div class="card"><span>{html.escape(title)}</span><b class="{cls}">{before:.3f} → {after:.3f}</b>'
            f'<span>before → after</span></div>')  # fmt: skip


def _figure_html(path: Path | None, caption: str, run_dir: Path) -> str:
    if path is None:
        return ""
    return (f'<figure><img src="{html.escape(str(path.relative_to(run_dir)))}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def write_report(run_dir: str | Path, active_results: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html and RUN_DIR/plots/*.png; returns the page's path."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory (give the --out of `rlhf loop` or `rlhf demo`)")
    run = load_run(run_dir)
    active = None
    if active_results:
        try:
            active = json.loads(Path(active_results).read_text())
            active["methods"]  # noqa: B018 - the shape `rlhf bench active` writes
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{active_results}: not an `rlhf bench active` result ({exc})") from None
    plots = run_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    rounds, first, last = run["rounds"], run["rounds"][0], run["rounds"][-1]
    figures = [
        (
            plot_rounds(rounds, plots / "rewards.png"),
            "Gold helpfulness (hidden from training), the proxy "
            "reward the policy was trained on, and the harmful-answer share, per round.",
        ),
        (
            plot_overoptimisation(run["steps"], plots / "overoptimisation.png"),
            "Every PPO batch of every round, against its KL to the initial policy: where the proxy reward "
            "keeps rising and gold helpfulness does not, the policy is over-optimising the reward model "
            "(Gao et al. 2022).",
        ),
        (
            plot_reward_accuracy(rounds, plots / "reward_accuracy.png"),
            "Reward-model accuracy on held-out "
            "corpus pairs ordered by the hidden gold, against the labels it was trained on.",
        ),
        (plot_kl(rounds, plots / "kl.png"), "Sampled KL of each round's policy to the initial policy."),
        (
            plot_mismatch(run["steps"], plots / "mismatch.png"),
            "PPO's rollouts sampled by vLLM: how far the sampler's log-probs were from the trainer's, "
            "and the share of tokens whose importance weight hit the cap or was masked (docs/vllm.md).",
        ),
        (
            plot_frontier(rounds, run["frontier"], plots / "frontier.png"),
            "Each evaluated policy between "
            "gold helpfulness and harmful share; the dashed line links the policies no other beats on both.",
        ),
        (
            plot_kinds(rounds, plots / "risky_kinds.png"),
            "Answers to risky requests: harmful, a bare refusal, "
            "or the constructive redirect the guideline prefers.",
        ),
        (
            plot_acquisition(rounds, plots / "acquisition.png", active),
            "Expected information gain (BALD) of the comparisons acquired against the whole candidate "
            "pool (round 1 has no reward model yet: random picks, zero gain)."
            + (
                " Right: accuracy against labels per acquisition function, from rlhf bench active."
                if active
                else ""
            ),
        ),
    ]
    agreement = agreement_table(run["labels"], newest_quality(run_dir))
    page = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>rlhf report: {html.escape(run_dir.name)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>RLHF run report: {html.escape(run_dir.name)}</h1>",
        f"<p class='muted'>{len(rounds) - 1} rounds, {last['labels_total']} labels. Gold figures come from "
        "the bundled world's hidden preference functions (world prompts only), which no part of training sees.</p>",
        '<div class="cards">',
        *(
            _card(title, first["eval"][key], last["eval"][key], better)
            for key, title, better in (
                ("gold_helpfulness", "gold helpfulness", "up"),
                ("harmful_share", "harmful share (risky requests)", "down"),
                ("kl", "KL to initial (nats)", "down"),
            )
            if key in first["eval"] and key in last["eval"]
        ),
        "</div>",
        "<h2>Per round</h2>",
        _table(
            [
                "round",
                "labels",
                "gold helpfulness",
                "gold utility",
                "harmful share",
                "KL",
                "proxy reward",
                "RM acc. helpful",
                "RM acc. harmless",
                "acquisition",
                "λ",
                "seconds",
            ],
            [
                [
                    r["round"],
                    r["labels_total"],
                    r["eval"].get("gold_helpfulness"),
                    r["eval"].get("gold_utility"),
                    r["eval"].get("harmful_share"),
                    r["eval"]["kl"],
                    r["eval"].get("proxy_reward"),
                    r.get("reward", {}).get("gold_accuracy", {}).get("helpful"),
                    r.get("reward", {}).get("gold_accuracy", {}).get("harmless"),
                    r.get("acquire", {}).get("acquisition/method"),
                    r.get("policy_update", {}).get("lagrange"),
                    float(sum(r.get("seconds", {}).values())),
                ]
                for r in rounds
            ],
        ),  # fmt: skip
        '<h2>Plots</h2><div class="grid">',
        *(_figure_html(path, caption, run_dir) for path, caption in figures),
        "</div>",
        "<h2>Labellers</h2>",
        f"<p class='muted'>{agreement['pairs']} distinct comparisons; Krippendorff's alpha (nominal) "
        f"{_fmt(agreement.get('alpha'))}"
        + (f" ({html.escape(agreement['alpha_undefined'])})" if agreement.get("alpha_undefined") else "")
        + f"; labels agreeing with the gold ordering {_fmt(agreement.get('gold_agreement'))}. "
        "Agreement with others counts comparisons that several labellers answered.</p>",
        f"<p class='muted'>{_fit_note(agreement)}</p>",
        _table(
            [
                "labeller",
                "labels",
                "agrees with gold (toy world only)",
                "agrees with others",
                "rationality",
                "judges by",
                "flagged",
                "label weight",
            ],
            [
                [
                    r["labeller"],
                    r["labels"],
                    r["agree_gold"],
                    r["agree_others"],
                    _with_sd(r["rationality"], r.get("rationality_sd")),
                    _judges_by(r.get("judges_by")),
                    ", ".join(r["flag_reasons"]) if r["flagged"] and r.get("flag_reasons") else r["flagged"],
                    r.get("weight"),
                ]
                for r in agreement["labellers"]
            ],
        ),  # fmt: skip
        "<h2>Samples before and after</h2>",
        _samples_table(run_dir, first["round"], last["round"]),
        "</main></body></html>",
    ]
    out = run_dir / REPORT_FILE
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(page), encoding="utf-8")
    tmp.replace(out)
    return out


def _samples_table(run_dir: Path, before: int, after: int) -> str:
    from rlhf.io import read_jsonl
    from rlhf.loop import round_dir

    old = read_jsonl(round_dir(run_dir, before) / "showcase.jsonl")
    new = read_jsonl(round_dir(run_dir, after) / "showcase.jsonl")

    def shown(row: dict) -> str:
        return row["response"] + (
            f"  [{row['kind']}, gold {row['helpfulness']:.2f}]" if "kind" in row else ""
        )

    rows = [[a["prompt"].removeprefix("User: ").removesuffix("\nAssistant:"), shown(a), shown(b)]
            for a, b in zip(old, new, strict=False)]  # fmt: skip
    return _table(["prompt", f"round {before}", f"round {after}"], rows, cls="samples")
