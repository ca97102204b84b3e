"""benchmarks/hardening.py reads Lynis's report file (no Lynis run here)."""

import pytest
import sourcefile

bench = sourcefile.load("benchmarks/hardening.py", "mtg_bench_hardening")

REPORT = """\
# Lynis Report
report_version_major=1
warning[]=PKGS-7392|Found one or more vulnerable packages.|-|-|
suggestion[]=SSH-7408|Consider hardening SSH configuration|AllowTcpForwarding (set YES to NO)|-|
suggestion[]=BANN-7126|Add a legal banner to /etc/issue, to warn unauthorized users|-|-|
hardening_index=64
"""


def test_the_report_gives_the_index_warnings_and_suggestions():
    parsed = bench.parse_report(REPORT)
    assert parsed["index"] == 64
    assert parsed["warnings"] == [("PKGS-7392", "Found one or more vulnerable packages.")]
    assert [s[0] for s in parsed["suggestions"]] == ["SSH-7408", "BANN-7126"]


def test_a_report_without_an_index_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="no hardening_index"):
        bench.parse_report(REPORT.replace("hardening_index=64\n", ""))
