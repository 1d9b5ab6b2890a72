"""Exploding gradients without clipping (C1, C2): do real networks show cliffs, and does a step at one undo progress?

Runs (``conf/experiment/exploding.yaml``): no clipping, plain SGD at each setup's own lr, seeds 0-3, on four setups:
digits_deep_mlp (20 tanh layers, gain 2: products of many large weights), adding_rnn (Pascanu's tanh RNN, L = 50),
charlm_lstm (the default job's LSTM at lr 16) and regression_mlp (the Keras tutorial's "exploding" MLP, unscaled
targets). Every lr is the setup's (conf/setup/), chosen there before this experiment; here ``diverge_factor`` is 100
instead of 5, so that a run goes on through a loss spike and we can see whether what it lost comes back (a run still
ends on a non-finite loss, 5 non-finite gradients in a row, or a loss 100 x its first), and held-out evaluation runs
every 25 steps so that "the first evaluation after a spike" is close to it.

C1 is read from the pre-clip gradient norm g_s of every step. A *sudden spike* is a step whose g_s is at least
SUDDEN x the smallest norm of the (up to) 5 steps before it AND at least SUDDEN x the run's median (or non-finite): the
norm rose tenfold within a few steps to a value ten times the typical one. A cliff is such a jump; the definition does
not count the large-but-decaying gradients of the first steps of training (e.g. the deep tanh net's huge gradient at
its initialisation, which then falls) nor batch-to-batch noise, which stays near the median. A gradient that grows
geometrically over several steps until the run diverges does count: a huge gradient, whatever its cause. Tail
statistics (max / median, where the max is, share of steps above 10 x the run's median) are reported beside it.

C2 is read from the held-out metric: every step that is a sudden spike, has g_s > 10 x the run's median, or is a loss
spike (loss > running median + spike_factor robust SDs of the spike_window losses before, the suite's definition,
gradclip.summary.spike_steps) is a spike step;
spike steps between two evaluations form one *episode*. For each episode: the metric at the first evaluation at or
after its first spike step against the best metric of the evaluations before it (metric units, oriented so that
positive = worse), and that as a share of the progress made so far (initial metric - best before). An episode whose
run diverged at that evaluation undid everything (share = inf). Episodes before any real progress (less than
MIN_PROGRESS = 5 % of the initial metric's magnitude, so that a tiny improvement does not make noise look like a
huge share) have no share. Only episodes that contain a gradient spike (sudden, or > 10 x the run's median) count for
C2: a loss spike alone is not a step at a cliff, and on small noisy batches (adding: 20 sequences) the suite's
loss-spike test fires on ordinary batch-to-batch noise; loss-only episodes are kept in the table and the figure.
The same share is given for the training loss (max over the 10 steps from the spike vs the best 10-step mean before
it) as a finer-grained check; the verdict uses the held-out metric.
"""

from __future__ import annotations

from experiments.exploding.plots import figures
from experiments.exploding.rules import RULE, verdict_c1, verdict_c2, verdicts
from experiments.exploding.runs import TRACE_BINS, sudden_spikes, tables

NAME = "exploding"
TITLE = "Exploding gradients without clipping: cliffs in real networks, and the progress a spike undoes"
CLAIMS = ("C1", "C2")
__all__ = ["NAME", "TITLE", "CLAIMS", "RULE", "tables", "verdicts", "figures", "sudden_spikes", "verdict_c1",
           "verdict_c2", "TRACE_BINS"]
