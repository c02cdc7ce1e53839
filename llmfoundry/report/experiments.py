"""The report of `make experiments`: one section per claim, a plot, a table and a verdict computed from the numbers.

`foundry report EXP` (EXP = the folder `scripts/experiments/*.sh` write, default `experiments/`) reads what the
plain `foundry` commands left there: eval-text scores (scores/*.json, or the one-line error a model gave,
scores/*.error), MedQA results (medqa/results.json), training metrics (runs/*/metrics.jsonl) and `foundry plan
--json` outputs (plan/*.json). An experiment that has not been run is listed as such. The verdicts are
sentences chosen by comparing the measured numbers; nothing in them is written in advance.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from llmfoundry.io import write_atomic
from llmfoundry.report import html
from llmfoundry.report.plots import COLORS, drawn, new_figure, png
from llmfoundry.report.runs import load_run

EXPERIMENTS = ("a_domain", "b_bert", "c_context", "d_size")
A_ARMS = {"pubmed-bpe": "PubMed data, PubMed BPE", "general-bpe": "general text, general BPE",
          "pubmed-gpt2": "PubMed data, GPT-2 tokenizer"}
C_ARMS = {"alibi": "MPT, ALiBi", "gpt2": "GPT-2, learned positions", "rope": "MPT, RoPE"}
D_SIZES = ("small", "medium", "large")
MEDQA_CHANCE = 0.2  # 1,273 questions with 5 options each: the expected accuracy of a uniform guess


def is_experiments_folder(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in EXPERIMENTS) and not (folder / "metrics.jsonl").exists()


def _json(path: Path) -> Any:
    """The file's JSON; None when it is missing or still empty (its command is running: `plan > FILE`)."""
    text = path.read_text() if path.is_file() else ""
    return json.loads(text) if text.strip() else None


def _score(path: Path) -> dict[str, Any] | None:
    record = _json(path)
    return record["scores"][0] if record else None


def _line(ax: Any, xs: list[float], ys: list[float], label: str, i: int) -> None:
    (line,) = ax.plot(xs, ys, "-o", color=COLORS[i % len(COLORS)], label=label, markersize=4)
    line.set_gid(json.dumps([label, "y"]))


def domain(folder: Path) -> tuple[list[tuple[str, Any]], str]:
    """(a): held-out PubMed bits per byte, tokens per abstract, MedQA accuracy, training FLOPs, per arm."""
    scores = {arm: _score(folder / "scores" / f"{arm}.json") for arm in A_ARMS}
    plans = {arm: _json(folder / "plan" / f"{arm}.json") for arm in A_ARMS}
    medqa = _json(folder / "medqa" / "results.json") or {}
    done = {arm: s for arm, s in scores.items() if s}
    if not done:
        return [], "<p>Not run (scripts/experiments/a_domain.sh).</p>"
    fig, ax = new_figure("(a) held-out PubMed bits per byte (lower is better)")
    names = list(done)
    bars = ax.barh([A_ARMS[a] for a in names], [done[a]["bits_per_byte"] for a in names], color=COLORS[:len(names)])
    bars.set_label("bits per byte")
    ax.set_xlabel("bits per UTF-8 byte of held-out abstracts")
    rows = []
    for arm in names:
        acc = medqa.get(arm, {}).get("medqa/0-shot/acc")
        flops = plans[arm]["flops_per_token"] * plans[arm]["tokens"] if plans[arm] else None
        rows.append([A_ARMS[arm], f"{done[arm]['bits_per_byte']:.4f}", f"{done[arm]['tokens_per_document']:.1f}",
                     f"{flops:.3g}" if flops else "", f"{plans[arm]['tokens']:,}" if plans[arm] else "",
                     f"{acc:.3f}" if acc is not None else "not run"])
    table = html.table(["arm", "held-out bits/byte", "tokens per abstract", "training FLOPs", "training tokens",
                        "MedQA 0-shot accuracy"], rows)
    return [("a_domain", fig)], table + f"<p>{html.escape(domain_verdict(done, medqa))}</p>"


def domain_verdict(scores: dict[str, dict[str, Any]], medqa: dict[str, dict[str, float]]) -> str:
    best = min(scores, key=lambda a: scores[a]["bits_per_byte"])
    parts = []
    if {"pubmed-bpe", "general-bpe"} <= set(scores):
        d, g = scores["pubmed-bpe"]["bits_per_byte"], scores["general-bpe"]["bits_per_byte"]
        parts.append(f"Domain data with a domain tokenizer {'beats' if d < g else 'does not beat'} general text at "
                     f"equal FLOPs on held-out PubMed: {d:.3f} vs {g:.3f} bits per byte ({(g - d) / g:+.0%}).")
    if {"pubmed-bpe", "pubmed-gpt2"} <= set(scores):
        d, t = scores["pubmed-bpe"], scores["pubmed-gpt2"]
        parts.append(f"On the same PubMed data the PubMed BPE needs {d['tokens_per_document']:.0f} tokens per "
                     f"abstract against GPT-2's {t['tokens_per_document']:.0f}, and reaches {d['bits_per_byte']:.3f} "
                     f"vs {t['bits_per_byte']:.3f} bits per byte: the domain tokenizer "
                     f"{'wins' if d['bits_per_byte'] < t['bits_per_byte'] else 'does not win'} at equal FLOPs.")
    parts.append(f"Best held-out PubMed bits per byte: {A_ARMS[best]}.")
    accs = {a: m.get("medqa/0-shot/acc") for a, m in medqa.items() if m.get("medqa/0-shot/acc") is not None}
    if accs:
        spread = ", ".join(f"{a} {v:.3f}" for a, v in accs.items())
        at_chance = all(abs(v - MEDQA_CHANCE) < 0.08 for v in accs.values())
        parts.append(f"MedQA zero-shot accuracy: {spread} (chance about {MEDQA_CHANCE:.2f}); "
                     + ("all at chance, as expected at this size: it says nothing about the claim."
                        if at_chance else "not all at chance; with this few questions and this model size treat "
                        "the difference with suspicion."))
    return " ".join(parts)


def training_seconds(run: Any) -> tuple[list[float], list[float]]:
    """(cumulative training seconds, held-out loss) at each evaluation: seconds from each logged step's own
    throughput (tokens since the last log / tokens per second), so evaluation time is not counted."""
    seconds, last_tokens, out_s, out_loss = 0.0, 0.0, [], []
    for record in run.records:
        rate, tokens = record.get("throughput/tokens_per_sec"), record.get("tokens")
        if rate and tokens is not None:
            seconds += (tokens - last_tokens) / rate
            last_tokens = tokens
        if "loss/val" in record:
            out_s.append(seconds)
            out_loss.append(float(record["loss/val"]))
    return out_s, out_loss


def bert(folder: Path) -> tuple[list[tuple[str, Any]], str]:
    """(b): held-out MLM loss against training seconds, MosaicBERT and classic BERT."""
    curves = {}
    for arm in ("mosaicbert", "classic"):
        if (folder / "runs" / arm / "metrics.jsonl").is_file():
            curves[arm] = training_seconds(load_run(folder / "runs" / arm))
    if not curves:
        return [], "<p>Not run (scripts/experiments/b_bert.sh).</p>"
    fig, ax = new_figure("(b) held-out MLM loss (15% masked) vs training seconds")
    for i, (arm, (xs, ys)) in enumerate(curves.items()):
        _line(ax, xs, ys, arm, i)
    ax.set_xlabel("training seconds (this machine)")
    ax.set_ylabel("MLM cross-entropy (nats)")
    ax.legend(fontsize="small")
    rows = [[arm, f"{xs[-1]:.1f}" if xs else "", f"{ys[-1]:.4f}" if ys else "", str(len(xs))]
            for arm, (xs, ys) in curves.items()]
    table = html.table(["model", "training seconds", "final held-out MLM loss", "evaluations"], rows)
    return [("b_bert", fig)], table + f"<p>{html.escape(bert_verdict(curves))}</p>"


def time_to_loss(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first time the curve is at or below target, interpolated linearly between evaluations."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y <= target:
            if i == 0:
                return x
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (x - x0) * (y0 - target) / (y0 - y)
    return None


def bert_verdict(curves: dict[str, tuple[list[float], list[float]]]) -> str:
    if set(curves) != {"mosaicbert", "classic"} or not all(ys for _, ys in curves.values()):
        return "Both arms are needed for a verdict."
    (ms, ml), (cs, cl) = curves["mosaicbert"], curves["classic"]
    target = max(ml[-1], cl[-1])  # a loss both reached
    tm, tc = time_to_loss(ms, ml, target), time_to_loss(cs, cl, target)
    assert tm is not None and tc is not None
    faster = tm < tc
    return (f"Both reach a held-out MLM loss of {target:.3f}: MosaicBERT after {tm:.1f} s, classic BERT after "
            f"{tc:.1f} s ({tc / tm:.2f}x). MosaicBERT {'reaches it in less' if faster else 'does not reach it in less'} "
            f"wall time here; final losses {ml[-1]:.3f} (MosaicBERT, {ms[-1]:.0f} s) and {cl[-1]:.3f} (classic, "
            f"{cs[-1]:.0f} s).")


def context(folder: Path) -> tuple[list[tuple[str, Any]], str]:
    """(c): held-out perplexity at each window length per position scheme, or the line that refused it."""
    lengths = sorted({int(p.stem.rsplit("-", 1)[1]) for p in (folder / "scores").glob("*-*.*")
                      if p.suffix in (".json", ".error")}) if (folder / "scores").is_dir() else []
    if not lengths:
        return [], "<p>Not run (scripts/experiments/c_context.sh).</p>"
    results: dict[str, dict[int, float | str]] = {}
    for arm in C_ARMS:
        for n in lengths:
            score, error = _score(folder / "scores" / f"{arm}-{n}.json"), folder / "scores" / f"{arm}-{n}.error"
            if score:
                results.setdefault(arm, {})[n] = score["perplexity"]
            elif error.is_file():
                results.setdefault(arm, {})[n] = error.read_text().strip()
    trained = trained_length(folder) or lengths[0]
    fig, ax = new_figure(f"(c) held-out perplexity vs window (trained at {trained})")
    for i, (arm, by_len) in enumerate(results.items()):
        pts = [(n, v) for n, v in sorted(by_len.items()) if isinstance(v, float)]
        _line(ax, [n for n, _ in pts], [v for _, v in pts], C_ARMS[arm], i)
    ax.axvline(trained, color="0.6", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("window (tokens)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize="small")
    rows = [[C_ARMS[arm], *[_cell(by_len.get(n)) for n in lengths]] for arm, by_len in results.items()]
    table = html.table(["model", *[f"{n} tokens" + (" (trained)" if n == trained else "") for n in lengths]], rows)
    return [("c_context", fig)], table + f"<p>{html.escape(context_verdict(results, trained))}</p>"


def trained_length(folder: Path) -> int | None:
    """The training sequence length of (c)'s runs (the ALiBi run's resolved config), if it is there."""
    config = folder / "runs" / "alibi" / "config.yaml"
    if not config.is_file():
        return None
    loader = (yaml.safe_load(config.read_text()) or {}).get("train_loader") or {}
    return (loader.get("dataset") or {}).get("max_seq_len")


def _cell(value: float | str | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else "stops (one-line error, below)"


EXTRAPOLATES = 1.1  # a perplexity at the longest window within 10% of the trained length's counts as extrapolating


def context_verdict(results: dict[str, dict[int, float | str]], trained: int) -> str:
    """Per arm: how much context helps up to the trained length (shorter windows), and the ratio at the longest
    window to the trained one; then whether the measurement separates ALiBi from RoPE at all."""
    parts: list[str] = []
    extrapolates: dict[str, bool] = {}  # per arm scored past its training length
    for arm, by_len in results.items():
        base = by_len.get(trained)
        if not isinstance(base, float):
            parts.append(f"{C_ARMS[arm]}: not scored at its training length ({trained} tokens).")
            continue
        text = f"{C_ARMS[arm]}: perplexity {base:.1f} at {trained} tokens"
        short = [n for n in sorted(by_len) if n < trained and isinstance(by_len[n], float)]
        if short:
            text += f" ({by_len[short[0]]:.1f} at {short[0]}: context helps {1 - base / by_len[short[0]]:.1%})"
        longer = [n for n in sorted(by_len) if n > trained]
        scored = [n for n in longer if isinstance(by_len[n], float)]
        stopped = [n for n in longer if not isinstance(by_len[n], float)]
        if scored:
            ratio = by_len[scored[-1]] / base  # type: ignore[operator]
            extrapolates[arm] = ratio <= EXTRAPOLATES
            text += (f", {by_len[scored[-1]]:.1f} at {scored[-1]} ({ratio:.2f}x): "
                     f"{'extrapolates (within 10%)' if extrapolates[arm] else 'degrades past its training length'}")
        if stopped:
            text += f"; stops at {stopped[0]} tokens with a one-line error: {str(by_len[stopped[0]]).strip()}"
        parts.append(text + ".")
    longest = max((n for by_len in results.values() for n, v in by_len.items() if isinstance(v, float)), default=None)
    at_longest = {arm: v[longest] for arm, v in results.items() if isinstance(v.get(longest), float)}
    if longest is not None and len(at_longest) > 1:
        best = min(at_longest, key=lambda a: at_longest[a])  # type: ignore[arg-type, return-value]
        parts.append(f"At {longest} tokens the lowest perplexity is {C_ARMS[best]}'s.")
    if "alibi" in extrapolates and "rope" in extrapolates:
        parts.append({
            (True, False): "The claim holds here: ALiBi extrapolates where RoPE degrades.",
            (True, True): "RoPE extrapolates here too, so this miniature does not separate the two schemes: the "
                          "claim that ALiBi extrapolates where rotary positions degrade is not reproduced at this "
                          "size; ALiBi's lower perplexity is there already at the training length.",
            (False, False): "Neither extrapolates here.",
            (False, True): "The claim fails here: RoPE extrapolates and ALiBi degrades.",
        }[extrapolates["alibi"], extrapolates["rope"]])
    return " ".join(parts)


def size(folder: Path) -> tuple[list[tuple[str, Any]], str]:
    """(d): held-out loss against parameters at one FLOP budget; the best size and Chinchilla's 20 tokens/param."""
    points = {}
    for s in D_SIZES:
        score, plan = _score(folder / "scores" / f"{s}.json"), _json(folder / "plan" / f"{s}.json")
        if score and plan:
            points[s] = {"params": plan["parameters"], "loss": math.log(score["perplexity"]),
                         "bpb": score["bits_per_byte"], "tokens": plan["tokens"],
                         "chinchilla_tokens": plan["chinchilla_tokens"],
                         "flops": plan["flops_per_token"] * plan["tokens"]}
    if not points:
        return [], "<p>Not run (scripts/experiments/d_size.sh).</p>"
    best = min(points, key=lambda s: points[s]["loss"])
    fig, ax = new_figure("(d) held-out loss vs size at one FLOP budget")
    _line(ax, [p["params"] for p in points.values()], [p["loss"] for p in points.values()], "held-out loss", 0)
    ax.plot([points[best]["params"]], [points[best]["loss"]], "*", color="#d62728", markersize=14,
            label=f"compute-optimal here: {best}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out cross-entropy (nats/token)")
    ax.legend(fontsize="small")
    rows = [[s, f"{p['params']:,}", f"{p['flops']:.3g}", f"{p['tokens']:,}", f"{p['chinchilla_tokens']:,}",
             f"{p['tokens'] / p['chinchilla_tokens']:.3f}", f"{p['loss']:.4f}", f"{p['bpb']:.4f}"]
            for s, p in points.items()]
    table = html.table(["size", "parameters", "training FLOPs", "tokens trained", "Chinchilla tokens (plan, 20/param)",
                        "tokens / Chinchilla", "held-out loss (nats/token)", "bits/byte"], rows)
    return [("d_size", fig)], table + f"<p>{html.escape(size_verdict(points))}</p>"


def size_verdict(points: dict[str, dict[str, float]]) -> str:
    best = min(points, key=lambda s: points[s]["loss"])
    budget = sum(p["flops"] for p in points.values()) / len(points)
    optimal = math.sqrt(budget / 120)  # C = 6 N D with D = 20 N
    chinchilla = min(points, key=lambda s: abs(math.log(points[s]["params"] / optimal)))
    smallest = min(points, key=lambda s: points[s]["params"])
    text = (f"At {budget:.3g} training FLOPs the lowest held-out loss is the {best} model "
            f"({points[best]['params']:,} parameters, {points[best]['loss']:.3f} nats/token). Chinchilla's rule "
            f"(C = 6ND, D = 20N) puts the optimum at about {optimal:,.0f} parameters, nearest to the {chinchilla} "
            f"model; ")
    text += ("the measurement agrees: train longer, not larger." if best == chinchilla else
             f"the measurement {'still favours a smaller model than the largest' if best != max(points, key=lambda s: points[s]['params']) else 'disagrees'}"
             f" (at this tiny scale the embedding and attention terms weigh more than 6N counts).")
    if best == smallest and chinchilla == smallest:
        text += " Every size here is larger than Chinchilla's optimum, so the smallest wins, as the claim predicts."
    return text


SECTIONS = [("(a) Domain data and tokenizer vs general, equal FLOPs (PubMed GPT / BioMedLM)", "a_domain", domain),
            ("(b) MosaicBERT vs classic BERT: MLM loss against wall time", "b_bert", bert),
            ("(c) ALiBi extrapolation: trained at 128, scored up to 1024", "c_context", context),
            ("(d) Train longer, not larger: three sizes, one FLOP budget (Chinchilla)", "d_size", size)]


def write_experiments_report(folder: Path, out: Path) -> Path:
    """`folder`/report.html with the PNGs and series.json in `folder`/report/ (the page written last)."""
    pictures = out.with_suffix("")
    pictures.mkdir(parents=True, exist_ok=True)
    sections, series = [], {}
    for heading, name, build in SECTIONS:
        figures, body = build(folder / name)
        images = []
        for fig_name, fig in figures:
            data = png(fig)
            write_atomic(pictures / f"{fig_name}.png", data)
            series[fig_name] = drawn(fig)
            images.append(html.image(fig_name, data, heading))
        sections.append((heading, f"<div class=\"plots\">{''.join(images)}</div>{body}"))
    write_atomic(pictures / "series.json", json.dumps(series) + "\n")
    note = (f"From {folder} (scripts/experiments/*.sh, every number from this machine's own runs); written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Regenerate with: foundry report {folder}")
    write_atomic(out, html.page("The recipes' claims, reproduced in miniature", sections, note))
    return out
