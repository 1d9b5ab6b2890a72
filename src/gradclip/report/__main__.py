"""``python -m gradclip.report <sweep-dir>``."""

from gradclip.report.page import main

main()
