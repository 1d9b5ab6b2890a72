"""The report of a sweep: report.md, a self-contained report.html and figures/*.png under <sweep>/report/.

Built only from the job files on disk (summary.json, metrics.csv), so it can be rebuilt at any time:
``python -m gradclip.report <sweep-dir>`` or ``gradclip-report <sweep-dir>``.
"""

from gradclip.report.answer import answer
from gradclip.report.figures import Figure, make_figures
from gradclip.report.load import group_labels, load_runs
from gradclip.report.page import build_report, main
from gradclip.report.tables import describe, group_table, html_table, markdown_table, md_text, run_table

__all__ = ["Figure", "answer", "build_report", "describe", "group_labels", "group_table", "html_table", "load_runs",
           "main", "make_figures", "markdown_table", "md_text", "run_table"]
