"""benchmarks/monitoring.py's figures (lab/lib/cpustat.py) from the counters it would read (no Docker, no lab)."""

import pytest
import sourcefile

bench = sourcefile.load("lab/lib/cpustat.py", "mtg_cpustat")
sourcefile.load("benchmarks/monitoring.py", "mtg_bench_monitoring")  # it imports them

# /proc/self/cgroup in a lab container on this kind of host: cgroup v1 with a unified (v2) hierarchy beside it.
HYBRID = """\
13:net_cls,net_prio:/
2:cpuacct:/docker/9fc8ce3ee188
1:cpu:/docker/9fc8ce3ee188
0::/docker/9fc8ce3ee188
"""
PROC_STAT = (
    "19401 (prometheus) S 1 19401 19401 0 -1 4194560 81234 0 12 0 "
    "1500 320 7 3 20 0 12 0 987654 2147483648 30000 18446744073709551615"
)


def test_cpu_stat_gives_usage_usec_and_cpuacct_usage_is_converted_from_nanoseconds():
    cpu_stat = "usage_usec 837760526\nuser_usec 644804261\nsystem_usec 192956264\nnice_usec 1635746\n"
    assert bench.parse_usage_usec("/sys/fs/cgroup/cpu.stat", cpu_stat) == 837760526
    assert bench.parse_usage_usec("/sys/fs/cgroup/cpuacct/docker/x/cpuacct.usage", "769828614856\n") == 769828614


def test_a_cpu_stat_without_usage_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="no usage_usec"):
        bench.parse_usage_usec("/sys/fs/cgroup/cpu.stat", "user_usec 5\nsystem_usec 1\n")


def test_percent_of_one_cpu_from_two_samples():
    assert bench.cpu_percent(1_000_000, 1_600_000, 60.0) == pytest.approx(1.0)  # 0.6 s of CPU in 60 s
    assert bench.cpu_percent(0, 120_000_000, 60.0) == pytest.approx(200.0)  # two CPUs busy


def test_a_counter_going_back_or_an_empty_window_is_refused():
    with pytest.raises(ValueError, match="went back"):
        bench.cpu_percent(2_000_000, 1_000_000, 60.0)
    with pytest.raises(ValueError, match="no length"):
        bench.cpu_percent(0, 1, 0.0)


def test_proc_stat_fields_are_counted_from_the_last_parenthesis():
    parsed = bench.parse_proc_stat(PROC_STAT)
    assert parsed == {"utime": 1500, "stime": 320, "cutime": 7, "cstime": 3, "starttime": 987654}
    odd_name = PROC_STAT.replace("(prometheus)", "(a) b (c)")  # a command name may hold spaces and parentheses
    assert bench.parse_proc_stat(odd_name) == parsed


def test_a_line_that_is_not_proc_stat_is_refused():
    with pytest.raises(ValueError, match="not a /proc"):
        bench.parse_proc_stat("")
    with pytest.raises(ValueError, match="short"):
        bench.parse_proc_stat("1 (cron) S 0 1")


def test_a_process_share_counts_its_reaped_children_and_not_a_restarted_process():
    before = {"utime": 100, "stime": 50, "cutime": 10, "cstime": 0, "starttime": 5}
    after = {"utime": 160, "stime": 60, "cutime": 40, "cstime": 10, "starttime": 5}  # 110 ticks
    assert bench.process_percent(before, after, 100, 10.0) == pytest.approx(11.0)
    assert bench.process_percent(before, {**after, "starttime": 9}, 100, 10.0) is None
    assert bench.process_percent(before, None, 100, 10.0) is None


def test_the_counter_files_of_a_hybrid_host_v2_first_then_v1():
    assert bench.cpu_file_candidates(HYBRID) == [
        "/sys/fs/cgroup/docker/9fc8ce3ee188/cpu.stat",
        "/sys/fs/cgroup/unified/docker/9fc8ce3ee188/cpu.stat",
        "/sys/fs/cgroup/cpuacct/docker/9fc8ce3ee188/cpuacct.usage",
        "/sys/fs/cgroup/cpu,cpuacct/docker/9fc8ce3ee188/cpuacct.usage",
    ]


def test_a_container_in_its_own_cgroup_namespace_reads_the_root_cpu_stat():
    assert bench.cpu_file_candidates("0::/\n") == ["/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/unified/cpu.stat"]


def test_a_cgroup_v1_only_host_reads_cpuacct_usage():
    v1 = "4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    assert bench.cpu_file_candidates(v1) == [
        "/sys/fs/cgroup/cpuacct/docker/abc/cpuacct.usage",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpuacct.usage",
    ]


def test_nested_groups_are_counted_once_and_siblings_each():
    server = "/sys/fs/cgroup/unified/docker/aaa/cpu.stat"
    sibling = "/sys/fs/cgroup/unified/docker/bbb/cpu.stat"  # the server's MariaDB on a cgroup v1 host
    nested = "/sys/fs/cgroup/unified/docker/aaa/docker/ccc/cpu.stat"  # inside the server's group already
    prefix_only = "/sys/fs/cgroup/unified/docker/aaaz/cpu.stat"  # a name starting like it is not inside it
    files = [server, sibling, nested, prefix_only, sibling]
    assert bench.independent_files(files) == [server, sibling, prefix_only]
    assert bench.independent_files(["/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/docker/x/cpu.stat"]) == [
        "/sys/fs/cgroup/cpu.stat"
    ]


def test_the_cpus_a_container_may_use():
    assert bench.effective_cpus(2) == 2
    assert bench.effective_cpus(2, 0, -1, 100000) == 2  # cgroup v1: no quota
    assert bench.effective_cpus(4, 1_500_000_000) == 1.5  # docker run --cpus 1.5
    assert bench.effective_cpus(4, 0, 50000, 100000) == 0.5


def test_summary_adds_what_monitoring_costs_round_by_round():
    summary = bench.summarize([2.0, 3.0], [4.5, 5.5])
    assert summary["without"] == pytest.approx(2.5)
    assert summary["with"] == pytest.approx(5.0)
    assert summary["added"] == pytest.approx(2.5)
    assert summary["ratio"] == pytest.approx(2.0)
    assert summary["per_round"] == pytest.approx([2.5, 2.5])
    assert bench.summarize([0.0], [1.0])["ratio"] is None


def test_the_verdict_is_on_what_monitoring_adds():
    assert bench.verdict(5.0) == "ok"
    assert bench.verdict(5.01) == "OVER"
    assert bench.verdict(-0.3) == "ok"  # noise: the with window was quieter


def test_sections_of_a_sampled_output():
    text = "== /proc/uptime\n123.45 200.0\n== /proc/19401/stat\n== /sys/fs/cgroup/cpu.stat\nusage_usec 5\nuser_usec 3"
    assert bench.split_sections(text) == {
        "/proc/uptime": "123.45 200.0",
        "/proc/19401/stat": "",  # the process was gone
        "/sys/fs/cgroup/cpu.stat": "usage_usec 5\nuser_usec 3",
    }
