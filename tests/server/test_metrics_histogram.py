"""The histogram of ``Metrics``: Prometheus's cumulative buckets, whatever the values and their order.

``observe`` counts a value once, in the first bucket that holds it, and ``render`` adds the buckets up; these tests
compare the rendered text with the definition (a bucket ``le=b`` counts every value <= b)."""

from __future__ import annotations

import math
import random
import re

from rhetor.server.observe import _BUCKETS, Metrics

_LINE = re.compile(r'^h_seconds_bucket\{path="/p",le="([^"]+)"\} (\S+)$')


def _rendered(values: list[float]) -> tuple[dict[str, float], float, float]:
    m = Metrics()
    for v in values:
        m.observe("h_seconds", {"path": "/p"}, v, help_="test")
    text = m.render()
    buckets = {match[1]: float(match[2]) for line in text.splitlines() if (match := _LINE.match(line))}
    count = float(re.search(r'^h_seconds_count\{path="/p"\} (\S+)$', text, re.M)[1])  # type: ignore[index]
    total = float(re.search(r'^h_seconds_sum\{path="/p"\} (\S+)$', text, re.M)[1])  # type: ignore[index]
    return buckets, count, total


def _expected(values: list[float]) -> dict[str, float]:
    out = {f"{b:g}": float(sum(1 for v in values if v <= b)) for b in _BUCKETS}
    out["+Inf"] = float(len(values))
    return out


def test_buckets_are_cumulative_at_the_bounds_between_them_and_beyond() -> None:
    values = [0.0, 0.001, 0.0010001, 0.0025, 0.003, 1, 1.0, 7.5, 120, 120.5, 1e6, 0.0005, 0.05, 0.05]
    buckets, count, total = _rendered(values)
    assert buckets == _expected(values)
    assert list(buckets) == [*(f"{b:g}" for b in _BUCKETS), "+Inf"]  # in the order Prometheus expects
    assert count == len(values)
    assert math.isclose(total, sum(values))


def test_random_values_match_the_definition() -> None:
    rng = random.Random(8)
    values = [rng.choice((rng.uniform(0, 0.02), rng.uniform(0, 200), rng.choice(_BUCKETS))) for _ in range(2000)]
    buckets, count, _ = _rendered(values)
    assert buckets == _expected(values)
    assert count == 2000


def test_a_nan_counts_only_in_the_total() -> None:
    buckets, count, _ = _rendered([float("nan"), 0.001])
    assert buckets == {**{f"{b:g}": 1.0 for b in _BUCKETS}, "+Inf": 2.0}
    assert count == 2


def test_each_label_set_has_its_own_buckets() -> None:
    m = Metrics()
    m.observe("h_seconds", {"path": "/a"}, 0.004)
    m.observe("h_seconds", {"path": "/b"}, 3.0)
    text = m.render()
    assert 'h_seconds_bucket{path="/a",le="0.005"} 1' in text
    assert 'h_seconds_bucket{path="/b",le="0.005"} 0' in text
    assert 'h_seconds_bucket{path="/b",le="5"} 1' in text
    assert 'h_seconds_bucket{path="/a",le="0.0025"} 0' in text


def test_sample_values_are_written_exactly() -> None:
    """Prometheus computes rates from these numbers: six significant digits (``:g``) froze a counter past 999,999."""
    m = Metrics()
    m.inc("c_total", {"k": "v"}, 1_234_567)
    m.inc("c_total", {"k": "v"})
    m.inc("usd_total", {}, 0.1)
    m.inc("usd_total", {}, 0.2)
    m.inc("big_total", {}, 2.0**60)
    m.observe("h_seconds", {"path": "/p"}, 12345.678901)
    text = m.render()
    assert 'c_total{k="v"} 1234568\n' in text
    assert f"usd_total {0.1 + 0.2!r}\n" in text  # the float itself, read back exactly
    assert f"big_total {2**60}\n" in text
    assert 'h_seconds_sum{path="/p"} 12345.678901\n' in text
    assert 'h_seconds_bucket{path="/p",le="+Inf"} 1\n' in text


def test_infinite_and_nan_samples_use_prometheus_spelling() -> None:
    m = Metrics()
    m.inc("up_total", {}, float("inf"))
    m.inc("down_total", {}, float("-inf"))
    m.inc("odd_total", {}, float("nan"))
    text = m.render()
    assert "up_total +Inf\n" in text and "down_total -Inf\n" in text and "odd_total NaN\n" in text
