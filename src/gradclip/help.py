"""`python run.py --help`: every group option under conf/ with the first line of its yaml's comment, for Hydra's help
template (conf/hydra/help/gradclip.yaml reads it through the ``gradclip_options`` resolver)."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

ADDED = {"experiment"}  # groups with no default: chosen with +group=option


def describe(path: Path) -> str:
    """The first line of a yaml's leading comment, with … when the comment goes on ('' when it has none)."""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            comment.append(line.lstrip("# ").strip())
    return comment[0] + (" …" if len(comment) > 1 else "") if comment else ""


def options_text(conf: Path) -> str:
    """One line per option: 'clip=norm/10  Global-norm clipping at threshold 10 …', groups in name order, the default
    marked."""
    defaults = {}
    for entry in yaml.safe_load((conf / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update({k: v for k, v in entry.items() if " " not in k})
    rows = []
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        for option in sorted(p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*.yaml")):
            path = group / f"{option}.yaml"
            prefix = "+" if group.name in ADDED else ""
            default = " (default)" if defaults.get(group.name) == option else ""
            rows.append((f"{prefix}{group.name}={option}", describe(path) + default))
        rows.append(("", ""))
    width = max(len(choice) for choice, _ in rows)
    return "\n".join(f"  {choice:<{width}}  {text}".rstrip() for choice, text in rows).rstrip().replace("$", "$$")


def register_help(conf: Path) -> None:
    """Let the help template list the options of ``conf`` (idempotent)."""
    OmegaConf.register_new_resolver("gradclip_options", lambda: options_text(conf), replace=True)
