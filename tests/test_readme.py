"""Every number the README quotes comes from results/: its generated blocks equal what experiments/readme.py
renders from the committed results, and its prose quotes no other number of a verdict."""

import re

from experiments import readme


def test_the_readme_blocks_are_what_results_say():
    text = readme.README.read_text()
    assert readme.render(text) == text, "README.md is stale: run `python experiments/readme.py` (make figures)"


def test_the_prose_outside_the_generated_blocks_quotes_no_interval():
    text = readme.README.read_text()
    for begin, end in readme.MARKERS.values():
        text = text.split(begin)[0] + text.split(end)[1]
    assert not re.findall(r"\[[−-]?\d+\.?\d*, [−+-]?\d+\.?\d*\]", text)  # intervals live in the generated blocks
