"""The process's resident memory, as the run logs it (``memory/*_peak_rss_mb``)."""

from __future__ import annotations

from waltz_ray.memory import ReportsMemory, current_rss_mb, memory_report, peak_rss_mb


def test_rss_is_positive_and_the_peak_bounds_the_current() -> None:
    before = peak_rss_mb()
    block = bytearray(64 * 1024 * 1024)  # 64 MiB, touched: resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    now, peak = current_rss_mb(), peak_rss_mb()
    assert 0 < now <= peak + 1.0  # statm and getrusage round differently: allow a MiB
    assert peak >= before and peak >= 64.0
    del block
    report = ReportsMemory().memory()
    assert set(report) == set(memory_report()) == {"peak_rss_mb", "rss_mb"}
    assert report["peak_rss_mb"] >= peak
