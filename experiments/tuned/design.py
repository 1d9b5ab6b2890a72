"""The protocol's declarations, all in one place and all fixed before the runs: seeds, the lr grid, the setups and
their arms, the rows (what each claim's test compares) and the smallest effects. A new setup is one ``Setup`` line
(and its conf/setup/NAME.yaml); a new row is one ``Row`` line; a new arm is one ``Arm`` line."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TUNING_SEEDS = (0, 1, 2)
BLOCKS = {"decide": tuple(range(1000, 1010)), "verify": tuple(range(2000, 2010))}
GRID = (-2, -1, 0, 1)  # lr = setup lr x 10^(k/2): 0.1, 0.316, 1, 3.16 x; extended by one k at most twice per side
MAX_EXTENSIONS = 2
EXTRA = ("+experiment=tuned",)  # conf/experiment/tuned.yaml: settings every stage shares
# Divergence: the suite's rule is a batch loss above 5 x the first (diverge_factor); the deciding runs go on up to 10 x
# so that the divergence rows can be read at 3, 5 and 10 x. Every other row uses 5 x.
DIVERGE_FACTORS = (3.0, 5.0, 10.0)
PRIMARY_FACTOR = 5.0
# Smallest effects worth caring about, on each comparison's scale (fixed before the runs).
SMALLEST = {"bpc": 0.05, "accuracy": 0.02, "mse": math.log(1.25), "steps": math.log(1.25), "diverged": 0.20,
            "spread": math.log(1.5)}
LOG_SCALE = {"mse"}  # compared as log ratios
SPREAD_CONFIDENCE = 0.97  # the swap test's level: centred arms are only nearly exchangeable (tests/test_tuned_rules.py)
LATE_SHARE = 0.2  # "gets stuck": the held-out gain over this last share of steps
SMOOTH_SHARE = 0.02  # steps to target: the training loss averaged over the last 2 % of steps
LENGTHS = (1, 2, 4)  # the C3 runs' length, in multiples of the setup's steps: the first at which norm 1's late gain
# on the tuning seeds is below the smallest effect (else the longest)


@dataclass(frozen=True)
class Arm:
    """An arm: its overrides (clip method, optimizer), and either tuned over the lr grid (``lr_of`` empty) or run at
    another arm's tuned lr times 10^(``lr_shift``/2); ``long``: trained for the C3 length."""

    label: str
    overrides: tuple[str, ...] = ()
    lr_of: str = ""
    lr_shift: int = 0
    long: bool = False

    @property
    def tuned(self) -> bool:
        return not self.lr_of


ARMS = {
    "none": Arm("no clip", ("clip=none",)),
    "norm1": Arm("norm 1", ("clip=norm1",)),
    "norm_tuned": Arm("norm, tuned threshold"),  # its clip: one of ``thresholds(setup)``, tuned with the lr
    "autoclip": Arm("AutoClip", ("clip=autoclip",)),
    "agc": Arm("AGC", ("clip=agc",)),
    "zclip": Arm("ZClip", ("clip=zclip",)),
    "zclip_nocap": Arm("ZClip, no cap", ("clip=zclip/nocap",)),
    # C3: no clipping at genuinely small lrs and at clipping's lr, and norm 1, all trained for the C3 length
    "norm1_long": Arm("norm 1", lr_of="norm1", long=True),
    "none_small": Arm("no clip at 0.1 x its lr", lr_of="none", lr_shift=-2, long=True),
    "none_smaller": Arm("no clip at 0.03 x its lr", lr_of="none", lr_shift=-3, long=True),
    "none_at_clip_lr": Arm("no clip at norm 1's lr", lr_of="norm1", long=True),
    # B3: the spike remedies of 2026 recipes, each at its reference's defaults (conf/clip, conf/optim)
    "skip_step": Arm("skip-step (OLMo) + norm 1", ("clip=skip_step",)),
    "spam": Arm("SPAM", ("clip=none", "optim=spam")),
    "adagc": Arm("AdaGC", ("clip=adagc",)),
    "stableadamw": Arm("StableAdamW", ("clip=none", "optim=stableadamw")),
}
ADAPTIVE = ("autoclip", "agc", "zclip", "zclip_nocap")
# optax's skip_large_updates is not among them: it has no default bound (conf/optim/skip_large_updates.yaml)
REMEDIES = ("skip_step", "spam", "adagc", "stableadamw")
C3_ARMS = ("norm1_long", "none_small", "none_smaller", "none_at_clip_lr")


@dataclass(frozen=True)
class Setup:
    label: str  # short name in tables and figures
    arms: tuple[str, ...]
    grad_norm: float = math.nan  # median pre-clip gradient norm of norm-1 runs at the setup's lr, seeds 0-2
    fails: str = ""  # what makes no clipping fail here (scope)
    clipped_today: str = ""  # the recipes that clip this kind of network by default (C5 is tested here too)
    grid: tuple[int, ...] = GRID  # the tuning lrs, k half-decades from the setup's lr
    max_extensions: int = MAX_EXTENSIONS  # rounds the grid may grow by one k per side to bracket a best lr
    bracket: bool = True  # False: the grid is the claim's scope; an arm's best lr in it is its tuned lr, bracketed or not
    blocks: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(BLOCKS))  # the deciding seeds

    @property
    def clipping_used(self) -> bool:
        """C5's scope: networks where no clipping fails, or that are clipped by default today."""
        return bool(self.fails or self.clipped_today)


EXPLODING = ("none", "norm1", "norm_tuned") + C3_ARMS
SETUPS = {  # grad_norm: results/threshold of commit 56dc44c (norm_median at threshold 1), read before these runs
    "charlm_lstm": Setup("char LSTM", EXPLODING, 0.17, "plain SGD at lr 16 on an LSTM, no gradient noise scaling"),
    "regression_mlp": Setup("regression MLP", EXPLODING + ADAPTIVE, 165.0,
                            "unscaled regression targets (std ~100), SGD momentum 0.9"),
    "digits_deep_mlp": Setup("deep MLP", EXPLODING + ADAPTIVE, 4.7,
                             "a 20-layer tanh MLP (width 128) at init gain 2, plain SGD at lr 1"),
    "digits_mlp": Setup("digits MLP (SGD)", ("none", "norm1")),
    "digits_mlp_adam": Setup("digits MLP (Adam)", ("none", "norm1")),
    # grad_norm: norm-1 runs at the setup's lr, seeds 0-2, validation split: median 0.835, 0.765, 0.937 (measured
    # for this line, before any of its claim runs)
    "charlm_gpt": Setup("GPT (AdamW)", ("none", "norm1", "norm_tuned"), 0.83,
                        clipped_today="a Transformer under AdamW, warm-up and cosine decay: nanoGPT, Hugging Face's "
                        "Trainer, Lightning, OLMo, Pythia and torchtitan clip it at 1.0 by default"),
    # B3's spiking setup (docs/protocol.md, "Where spikes happen"): the GPT at peak lr 0.095 and 0.3, where its runs
    # spiked after warm-up; tuned there only (never extended: a remedy that needs a lower lr does not remedy spikes
    # at these). grad_norm: norm-1 runs at 0.095, seeds 3000-3009 (results/lr_sensitivity), median 0.22.
    # Redeclared 2026-12-04 (docs/protocol.md, "B3 redeclared"): these two lrs are B3's scope, so no bracket is asked
    # for (a grid of two lrs never brackets one); decided on seeds no earlier declaration ran.
    "charlm_gpt_spiky": Setup("GPT at spiking lrs", ("norm_tuned",) + REMEDIES, 0.22, grid=(0, 1), max_extensions=0,
                              bracket=False, blocks={"decide": tuple(range(4000, 4010)),
                                                     "verify": tuple(range(5000, 5010))}),
}


@dataclass(frozen=True)
class Row:
    """One test: the claim says arm ``a`` does better than (``superiority``) or as well as (``noninferiority``) arm
    ``b`` on ``measure``; on ``every`` setup (a universal claim) or ``some`` setup (an existential one: "can"). It
    runs on every setup that declares both arms (``setups``)."""

    claim: str
    label: str
    a: str
    b: str
    measure: str  # final | steps | diverged | spread | stuck
    kind: str  # superiority | noninferiority
    quantifier: str = "every"
    where_used: bool = False  # only where clipping is used: no clipping fails there, or it is clipped by default
    only: tuple[str, ...] = ()  # these setups instead (for simulations)

    @property
    def setups(self) -> tuple[str, ...]:
        return self.only or tuple(name for name, s in SETUPS.items() if {self.a, self.b} <= set(s.arms)
                                  and (s.clipping_used or not self.where_used))


ROWS = [
    Row("C3", "a very small lr avoids divergence", "none_small", "none_at_clip_lr", "diverged", "superiority"),
    Row("C3", "a very small lr trains slower than clipping", "norm1_long", "none_small", "steps", "superiority"),
    Row("C3", "a small lr (0.1 x) can get stuck", "norm1_long", "none_small", "stuck", "superiority", "some"),
    Row("C3", "a smaller lr (0.03 x) can get stuck", "norm1_long", "none_smaller", "stuck", "superiority", "some"),
    Row("C5", "clipping trains faster", "norm1", "none", "steps", "superiority", where_used=True),
    Row("C5", "clipping is more predictable", "norm1", "none", "spread", "superiority", where_used=True),
    Row("C6", "threshold 1 is as good as a tuned one", "norm1", "norm_tuned", "final", "noninferiority"),
    Row("C7", "norm-1 clipping is harmless on every network", "norm1", "none", "final", "noninferiority"),
] + [Row("B2", f"{ARMS[m].label} at its defaults matches the tuned threshold", m, "norm_tuned", "final",
         "noninferiority") for m in ADAPTIVE] + [
    Row("B3", f"{ARMS[m].label} at its defaults is as good as the tuned threshold", m, "norm_tuned", "final",
        "noninferiority") for m in REMEDIES]


def thresholds(setup: str) -> list[float]:
    """The tuned-threshold arm's choices: 1, and 0.5 x and 10 x the setup's median gradient norm."""
    g = SETUPS[setup].grad_norm
    return [1.0] + [float(f"{x:.2g}") for x in (0.5 * g, 10 * g)]


def cells(setup: str, arm: str) -> list[tuple[float | None, tuple[str, ...]]]:
    """(threshold, clip overrides) of each configuration a tuned arm tries besides the lr."""
    if arm == "norm_tuned":
        return [(t, ("clip=norm1",) if t == 1 else ("clip=norm", f"clip.threshold={t:g}")) for t in thresholds(setup)]
    return [(1.0 if arm == "norm1" else None, ARMS[arm].overrides)]


def lr_scale(k: int) -> str:
    return f"{10 ** (k / 2):.4g}"


def job(setup: str, clip: tuple[str, ...], k: int, seed: int, split: str, *extra: str) -> list[str]:
    """One run's overrides (without EXTRA)."""
    return [f"setup={setup}", *clip, f"optim.lr_scale={lr_scale(k)}", f"seed={seed}", f"task.split={split}", *extra]
