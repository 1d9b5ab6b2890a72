"""The claims under test, in one list, and how the rows that test a claim combine into its verdict. Claim
experiments are found on disk: a module or package experiments/NAME with ``verdicts`` and its sweep
conf/experiment/NAME.yaml."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from experiments.common import Verdict

ROOT = Path(__file__).resolve().parents[1]

CLAIMS = {
    "C1": "Strongly non-linear objectives (RNNs, deep nets) have cliffs: products of many large weights give huge "
          "gradients.",
    "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
    "C3": "A very small learning rate avoids the cliffs but trains slowly and can get stuck.",
    "C4": "Norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited.",
    "C5": "Clipping makes training faster and more predictable, with less hyper-parameter trial and error.",
    "C6": "The usual max norm is 1.",
    "C7": "Caffe clips the global L2 norm over all parameters; implement it otherwise and use it on every network.",
    "B1": "(Zhang et al. 2020) Local smoothness grows with the gradient norm, which is why clipping helps.",
    "B2": "(beyond the post) Adaptive clipping (AutoClip, AGC, ZClip) matches the best fixed threshold untuned.",
    "B3": "(2026 recipes) Skipping the step or resetting the moments on a spike (OLMo's skip-step, SPAM), clipping each "
          "tensor (AdaGC) or the update (StableAdamW) is as good as clipping the gradient.",
    "B4": "(Wortsman et al. 2023) Model-side remedies (qk-layernorm, z-loss) widen the stable lr range as much as "
          "clipping.",
}
COMBINE_RULE = ("A claim tested by several experiments or rows gets one verdict: the word they all give; checks "
                "(true by construction) count only when nothing else tests the claim; otherwise 'partly' when some "
                "row supports it and none contradicts it, 'contradicted' (or 'not supported') when some row "
                "contradicts it and none supports it, 'mixed' when both happen (a setup-dependent row is both), "
                "else 'undecided'. A row that could not test it does not count.")
POSITIVE = {"supported", "partly", "setup-dependent"}  # setup-dependent: supported somewhere, contradicted elsewhere
NEGATIVE = {"contradicted", "not supported", "setup-dependent"}

def claim_experiments() -> list[str]:
    """Every claim experiment, found on disk: a module experiments/NAME.py (or package experiments/NAME/) with
    ``verdicts`` and its sweep conf/experiment/NAME.yaml; ordered by the first claim each tests, then by name."""
    names = [path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")
             if (ROOT / "experiments" / f"{path.stem}.py").is_file()
             or (ROOT / "experiments" / path.stem / "__init__.py").is_file()]
    modules = {name: importlib.import_module(f"experiments.{name}") for name in names}
    found = [name for name, module in modules.items() if hasattr(module, "verdicts")]
    return sorted(found, key=lambda name: (list(CLAIMS).index(modules[name].CLAIMS[0]), name))


def combined_verdict(rows: list[tuple[str, Verdict]]) -> str:
    """The claims-table verdict from every row that tested the claim (COMBINE_RULE)."""
    tested = [v.verdict for _, v in rows if v.verdict != "not tested"]
    evidence = [word for word in tested if not word.startswith("check")]
    words = set(evidence or tested)
    if not words:
        return "not tested"
    if len(words) == 1:
        return words.pop()
    if words & POSITIVE and words & NEGATIVE:
        return "mixed"
    if words & POSITIVE:
        return "partly"
    if words & NEGATIVE:
        return "contradicted" if "contradicted" in words else "not supported"
    return "undecided"


def claims_table(found: dict[str, list[tuple[str, Verdict]]]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": claim, "statement": statement,
                          "verdict": combined_verdict(found.get(claim, [])),
                          "by experiment": " · ".join(f"{row_label(name, v, found[claim])}: {v.verdict}"
                                                      for name, v in found.get(claim, [])) or "–"}
                         for claim, statement in CLAIMS.items()])


def row_label(name: str, verdict: Verdict, rows: list[tuple[str, Verdict]]) -> str:
    """The experiment's name, and the row's own words when the experiment gives the claim several rows."""
    several = sum(other == name for other, _ in rows) > 1
    own = verdict.statement.split(" (a = ")[0] if " (a = " in verdict.statement else verdict.statement.split(" (")[0]
    return f"{name} ({own})" if several else name


def evidence(found: dict[str, list[tuple[str, Verdict]]]) -> list[tuple[str, list[tuple[str, Verdict]]]]:
    """Per claim, the heading and each experiment's full verdict (what was measured, the numbers, the anchor)."""
    return [(f"{claim}: {statement} — {combined_verdict(found.get(claim, []))}", found.get(claim, []))
            for claim, statement in CLAIMS.items()]
