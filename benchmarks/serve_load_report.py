"""The report of benchmarks/serve_load.py: readable tables, the issue's goals checked, one JSON line appended.

Every number printed comes from the record the parts filled in; a part that
did not run (or failed) leaves its rows out and its goals "not measured".
"""

from __future__ import annotations

from collections.abc import Sequence

# The goals of issue 11 on the 2-core machine, as numbers.
FLOOR_RATIO_GOAL = 1.3
CEILING_SHARE_GOAL = 0.85
BASELINE_RATIO_GOAL = 3.0
HEALTHZ_P99_GOAL_MS = 100.0
MEMORY_GROWTH_GOAL = 0.10
GOAL_CONCURRENCY = 16


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned numbers and a rule under the headers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[index]) for row in cells]) for index, header in enumerate(headers)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths))]
    lines.append("  ".join("-" * width for width in widths))
    for row, raw in zip(cells, rows):
        lines.append(
            "  ".join(
                cell.rjust(width) if isinstance(value, (int, float)) else cell.ljust(width)
                for cell, width, value in zip(row, widths, raw)
            )
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def _closed_row(label: str, result: dict) -> list[object]:
    latency = result["latency_all"]
    memory = result.get("server_memory") or {}
    return [
        label,
        result.get("concurrency"),
        result["completed"],
        result["throughput_rps"],
        latency["p50_ms"],
        latency["p95_ms"],
        latency["p99_ms"],
        _percent(result["error_rate"]),
        _percent(result["client_cpu_share"]),
        result.get("server_cpu_s"),
        (result.get("server_metrics") or {}).get("mean_batch_size"),
        memory.get("rss_mib"),
    ]


CLOSED_HEADERS = (
    "server",
    "conc.",
    "answers",
    "ok/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "client CPU",
    "server CPU s",
    "mean batch",
    "RSS MiB",
)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def print_report(record: dict) -> None:
    """Print every measured part as a table, then the goals."""
    results = record["results"]
    print()
    print(f"serve_load: run {record['run']}; {record['machine_line']}")
    for label, floor in results.get("floor", {}).items():
        print(
            f"\nFloor ({label}): decode + resize + one batch-1 call, median of {floor['repeats']}: "
            f"{floor['median_ms']} ms (decode {floor['decode_median_ms']} ms, model {floor['model_median_ms']} ms; "
            f"min {floor['min_ms']}, max {floor['max_ms']})"
        )
    for label, ceiling in results.get("ceiling", {}).items():
        print(f"\nCeiling ({label}): photos/s of decode + model in this process, {ceiling['seconds_each']} s each")
        rows = [
            [row["layout"], row["batch_size"], row["photos_per_s"], "best" if row is ceiling["best"] else ""]
            for row in ceiling["rows"]
        ]
        print(table(("layout", "batch", "photos/s", ""), rows))
    closed_rows = [
        _closed_row(label, result) for label, levels in results.get("closed", {}).items() for result in levels
    ]
    closed_rows += [_closed_row("baseline (Keras Predictor)", result) for result in results.get("baseline", [])]
    if closed_rows:
        print("\nClosed loop (ok/s: 200 answers per second; errors: share of answers that were not 200)")
        print(table(CLOSED_HEADERS, closed_rows))
    overload = results.get("overload")
    if overload:
        load, probe = overload["load"], overload["healthz"]
        print(
            f"\nOverload: {load['rate_rps']} requests/s for {overload['seconds']} s, 4x the capacity of "
            f"{overload['capacity_rps']} ok/s ({overload['capacity_from']})"
        )
        rows = [
            [
                load["sent"],
                load["not_sent"],
                _percent(load["share_503"]),
                load["throughput_rps"],
                load["latency_200"]["p99_ms"],
                load["latency_503"]["p50_ms"],
                load["latency_503"]["p99_ms"],
                _other_failures(load),
                probe["latency_all"]["p99_ms"],
                probe["latency_all"]["max_ms"],
                _percent(load["client_cpu_share"]),
            ]
        ]
        headers = (
            "sent",
            "not sent",
            "503s",
            "admitted ok/s",
            "p99 admitted ms",
            "p50 503 ms",
            "p99 503 ms",
            "other failures",
            "healthz p99 ms",
            "healthz max ms",
            "client CPU",
        )
        print(table(headers, rows))
    layouts = results.get("layouts")
    if layouts:
        print("\nLayouts: catsdogs serve with --set serve.KEY=VALUE, closed loop")
        print(table(CLOSED_HEADERS, [_closed_row(entry["name"], entry["result"]) for entry in layouts]))
    soak = results.get("soak")
    if soak:
        print(
            f"\nSoak: {soak['requests']} requests at concurrency {soak['concurrency']} after {soak['warmup_requests']} "
            f"warm-up requests; outcomes {soak['result']['outcomes']}"
        )
        rows = [
            [name, (soak[key] or {}).get("rss_mib"), (soak[key] or {}).get("hwm_mib")]
            for name, key in (("at ready", "memory_at_ready"), ("before", "memory_before"), ("after", "memory_after"))
        ]
        print(table(("when", "VmRSS MiB", "VmHWM MiB"), rows))
        print(f"growth over the soak: {_percent(soak['growth'])}; since ready: {_percent(soak['growth_since_ready'])}")
    errors = record.get("errors") or {}
    for part, message in errors.items():
        print(f"\nPart {part} failed: {message}")
    print("\nGoals (issue 11)")
    if record["arguments"].get("quick"):
        print("(--quick: a few seconds per level only checks that the script works; these are not results)")
    print(table(("goal", "measured", "met"), [[g["goal"], g["measured"], g["met"]] for g in record["goals"]]))


def _other_failures(result: dict) -> int:
    return sum(count for outcome, count in result["outcomes"].items() if outcome not in ("200", "503"))


def _level(levels: Sequence[dict], concurrency: int) -> dict | None:
    return next((result for result in levels if result.get("concurrency") == concurrency), None)


def check_goals(results: dict) -> list[dict]:
    """The issue's goals against what was measured: one row each, `met` None where a number is missing."""
    goals = []

    def add(goal: str, measured: str | None, met: bool | None) -> None:
        goals.append({"goal": goal, "measured": measured or "not measured", "met": "-" if met is None else met})

    closed = results.get("closed", {})
    labels = dict.fromkeys([*results.get("floor", {}), *results.get("ceiling", {}), *closed])
    for label in labels:
        levels = closed.get(label, [])
        floor = results.get("floor", {}).get(label)
        one = _level(levels, 1)
        if floor and one and one["latency_all"]["p50_ms"] is not None:
            ratio = one["latency_all"]["p50_ms"] / floor["median_ms"]
            add(
                f"{label}: p50 at concurrency 1 <= {FLOOR_RATIO_GOAL}x the floor",
                f"{ratio:.2f}x",
                ratio <= FLOOR_RATIO_GOAL,
            )
        else:
            add(f"{label}: p50 at concurrency 1 <= {FLOOR_RATIO_GOAL}x the floor", None, None)
        ceiling = results.get("ceiling", {}).get(label)
        sixteen = _level(levels, GOAL_CONCURRENCY)
        if ceiling and sixteen:
            share = sixteen["throughput_rps"] / ceiling["photos_per_s"]
            add(
                f"{label}: throughput at concurrency 16 >= 85% of the ceiling",
                f"{share:.0%}",
                share >= CEILING_SHARE_GOAL,
            )
        else:
            add(f"{label}: throughput at concurrency 16 >= 85% of the ceiling", None, None)
    baseline = _level(results.get("baseline", []), GOAL_CONCURRENCY)
    for label, levels in closed.items():
        sixteen = _level(levels, GOAL_CONCURRENCY)
        if baseline and sixteen and baseline["throughput_rps"] > 0:
            ratio = sixteen["throughput_rps"] / baseline["throughput_rps"]
            add(
                f"{label}: throughput at concurrency 16 >= 3x the baseline",
                f"{ratio:.2f}x",
                ratio >= BASELINE_RATIO_GOAL,
            )
        elif baseline or "baseline" in results:
            add(f"{label}: throughput at concurrency 16 >= 3x the baseline", None, None)
    overload = results.get("overload")
    if overload:
        probe_p99 = overload["healthz"]["latency_all"]["p99_ms"]
        add(
            "overload: /healthz p99 <= 100 ms",
            f"{probe_p99} ms",
            probe_p99 is not None and probe_p99 <= HEALTHZ_P99_GOAL_MS,
        )
        load = overload["load"]
        add(
            "overload: only 503s beyond capacity (no other failures); their p99",
            f"{_other_failures(load)} other failures; 503 p99 {load['latency_503']['p99_ms']} ms",
            _other_failures(load) == 0,
        )
    soak = results.get("soak")
    if soak and soak.get("growth") is not None:
        add("soak: memory growth <= 10%", _percent(soak["growth"]), soak["growth"] <= MEMORY_GROWTH_GOAL)
    return goals
