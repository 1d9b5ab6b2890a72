"""The loop a user would write, for the benchmark's side (a): one nn.Module per run, runs one after another.

    python benchmarks/plain_loop.py --setup adding_rnn --seeds 0-7 --clip none,norm1 --steps 600

Model, data, batch size and lr come from the suite's own conf/ (hydra.compose), so the work per step is the suite's.
Prints one JSON line: model-steps, seconds, and how many logged losses were not finite.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gradclip.config import parts, register_schemas

CONF = Path(__file__).resolve().parents[1] / "conf"
SETUPS = {"adding_rnn": "adding_rnn", "deep_mlp": "digits_deep_mlp", "charlm_lstm": "charlm_lstm"}  # name -> conf/setup
# The cost of a step does not depend on the lr; a 10x smaller one keeps every run of both sides finite and running
# for all its steps (the suite ends a diverged run early, which would make the two sides do different work).
STABLE_LR = "optim.lr_scale=0.1"


def compose_setup(setup: str, *overrides: str):
    """The config `python run.py setup=<conf/setup> logger=none <overrides>` would run (a name of SETUPS, or of a
    conf/setup file)."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"setup={SETUPS.get(setup, setup)}", "logger=none", STABLE_LR, *overrides])


def parse_seeds(text: str) -> list[int]:
    """'0-7' or '0,1,5' -> a list of seeds."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def train(cfg, seed: int, steps: int, clip: bool) -> list[float]:
    torch.manual_seed(seed)
    task, model, _, _ = parts(cfg)
    task.setup(torch.device("cpu"))
    model = model.build(task)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr * cfg.optim.lr_scale)  # as a user would write it
    batches = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x, y = task.batch(batches)
        loss = task.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=sorted(SETUPS), required=True)
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-7"), help="0-7 (default) or 0,1,5")
    parser.add_argument("--clip", type=lambda text: text.split(","), required=True,
                        help="none, norm1 or none,norm1 (every seed of each, in that order)")
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    if not set(args.clip) <= {"none", "norm1"}:
        parser.error(f"--clip: {','.join(args.clip)} (choose from none, norm1)")
    started = time.perf_counter()
    cfg = compose_setup(args.setup)
    losses = [loss for clip in args.clip for seed in args.seeds
              for loss in train(cfg, seed, args.steps, clip == "norm1")]
    print(json.dumps({"setup": args.setup, "clip": ",".join(args.clip), "model_steps": len(losses),
                      "seconds": time.perf_counter() - started,
                      "nonfinite_losses": sum(not math.isfinite(v) for v in losses)}))


if __name__ == "__main__":
    main()
