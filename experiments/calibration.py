"""Calibration of the default main job: is no-clip unstable on most seeds while norm-1 clipping trains?

Runs: ``python run.py -m +experiment=calibration`` (the default config, clip=none,norm1, seeds 0-4).
Rule, fixed before the calibration runs of the chosen default (after a first scan at lr 4, 8, 16, 32; README):
  - a run is *unstable* if it diverged or had at least UNSTABLE_SPIKES loss spikes (spike_factor / spike_window);
  - the default is accepted if no-clip is unstable on most seeds (> half) and every norm-1 run finished without
    diverging and ended below its initial loss.
Prints the per-seed table the README quotes and the outcome, and writes both to <sweep>/calibration.txt.
Reads only the sweep's summary.json files.
"""

import sys
from pathlib import Path

from gradclip.files import write_atomic
from gradclip.report import load_runs

UNSTABLE_SPIKES = 3


def main(folder: str) -> int:
    runs, _ = load_runs(Path(folder))
    runs["unstable"] = runs.diverged | (runs.loss_spikes >= UNSTABLE_SPIKES)
    runs["initial bpc"] = runs.initial_loss / 0.6931471805599453
    columns = ["clip", "seed", "diverged_step", "loss_spikes", "unstable", "final_metric", "best_metric",
               "steps_to_target", "clipped_fraction", "grad_norm_median"]
    table = runs.sort_values(["clip", "seed"])[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}")
    none, norm1 = runs[runs["clip"] == "none"], runs[runs["clip"] == "norm1"]
    unstable = int(none.unstable.sum())
    trains = bool((~norm1.diverged & (norm1.final_metric < norm1["initial bpc"])).all())
    accepted = unstable > len(none) / 2 and trains and len(norm1) > 0
    outcome = (f"no-clip unstable on {unstable}/{len(none)} seeds; norm-1 trains on every seed: {trains}; "
               f"default {'accepted' if accepted else 'REJECTED'}")
    print(f"{table}\n{outcome}")
    write_atomic(Path(folder) / "calibration.txt", f"{table}\n{outcome}\n")
    return 0 if accepted else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/calibration.py <sweep-dir>")
    sys.exit(main(sys.argv[1]))
