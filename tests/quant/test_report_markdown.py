"""report.md rendering helpers: section titles and dB formatting."""

import math

from inhibitron.quant.report import SECTIONS as REPORT_SECTIONS
from inhibitron.quant.report_markdown import SECTIONS, fmt_db


def test_sections_are_those_of_the_report():
    assert SECTIONS is REPORT_SECTIONS and SECTIONS[0] == "Summary" and len(SECTIONS) == 8


def test_fmt_db():
    assert fmt_db(math.inf) == "exact"
    assert fmt_db(12.345) == "12.3"
    assert fmt_db(-math.inf) == "-inf"
