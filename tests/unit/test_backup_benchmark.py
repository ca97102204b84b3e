"""benchmarks/backup.py's figures from samples it would collect (no Docker, no lab)."""

import pytest
import sourcefile

bench = sourcefile.load("benchmarks/backup.py", "mtg_bench_backup")


def samples(start, seconds, waits):
    return [(start + i * 0.02, s, w) for i, (s, w) in enumerate(zip(seconds, waits, strict=True))]


def test_latency_keeps_the_window_and_reports_the_wait_for_a_core():
    quiet = samples(0.0, [0.001] * 100, [0.0] * 100)
    busy = samples(10.0, [0.001] * 90 + [0.009] * 10, [0.0] * 90 + [0.008] * 10)
    alone, during = bench.latency(quiet + busy, end=5.0), bench.latency(quiet + busy, 10.0, 20.0)
    assert (alone["n"], during["n"]) == (100, 100)
    assert alone["p99"] == pytest.approx(1.0)
    assert during["p99"] == pytest.approx(9.0)
    assert alone["runq_p99"] == 0.0
    assert during["runq_p99"] == pytest.approx(8.0)  # the slow tenth waited for a core: the backup took the CPU


def test_a_window_with_too_few_samples_is_refused():
    with pytest.raises(SystemExit, match="too few writer samples"):
        bench.latency(samples(0.0, [0.001] * 5, [0.0] * 5))


def test_steal_is_the_hypervisors_share_of_the_window():
    # user nice system idle iowait irq softirq steal guest guest_nice (jiffies)
    before = [100, 0, 50, 800, 10, 0, 5, 35, 0, 0]
    after = [160, 0, 70, 1480, 10, 0, 5, 75, 0, 0]  # 800 jiffies pass, 40 of them stolen
    assert bench.steal_percent(before, after) == pytest.approx(5.0)
    assert bench.steal_percent(before, before) == 0.0
