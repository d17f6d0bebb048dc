"""The figures of `make bench`: each part's raw JSON made compact, then the summary rows.

For every part of bench/suite.py, ``summarise_<part>(raw)`` keeps what the summary needs from the
JSON the part's script wrote (medians, min and max, counts; no per-request data), and
``rows_<part>(summary)`` turns it into rows of the one summary table: selfheal against its
baseline, the ratio first, the target and whether it was met (None: no target). Pure functions,
standard library only: bench/suite.py runs on the bare interpreter while each part runs in its own
venv.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
HANG_BOUND_SLACK_S = 0.5  # the replacement after the detection (about 0.15 s), with room for noise
LINEAR_SLACK = 1.25  # a tenfold step counts as "about linear" up to 12.5 times the time


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def row(  # noqa: PLR0917 - one call per table row reads best positionally
    part: str,
    what: str,
    ratio: float | None,
    selfheal: str,
    baseline: str,
    target: str = "-",
    met: bool | None = None,
) -> Row:
    return {
        "part": part,
        "row": what,
        "ratio": ratio,
        "selfheal": selfheal,
        "baseline": baseline,
        "target": target,
        "met": met,
    }


def workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


# ----- recovery ---------------------------------------------------------------------------------


def summarise_recovery(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"cycles": raw.get("cycles"), "machine": raw.get("machine")}
    names = {
        ("selfheal", 1): "selfheal_1w",
        ("selfheal", 2): "selfheal_2w",
        ("selfheal, hung worker (SIGSTOP)", 2): "hang_2w",
        ("supervisord", 1): "supervisord",
    }
    for scenario in raw.get("scenarios", []):
        key = names.get((scenario["scenario"], scenario["workers"]))
        if key is None:
            continue
        cycles = scenario.get("cycles", [])
        client = scenario.get("client", {})
        out[key] = {
            "mttr_ms": spread([c["mttr_s"] * 1000 for c in cycles if "mttr_s" in c]),
            "recovered": sum("mttr_s" in c for c in cycles),
            "faults": len(cycles),
            "requests": client.get("requests"),
            "refused": client.get("refused"),
            "failed": client.get("failed"),
            "longest_wait_ms": client["longest_s"] * 1000 if "longest_s" in client else None,
        }
    floor = (raw.get("floor") or {}).get("spawn_to_health_s") or []
    out["floor_ms"] = spread([s * 1000 for s in floor])
    out["floor_runs"] = len(floor)
    return out


def _mttr(s: dict[str, Any]) -> str:
    m = s["mttr_ms"]
    return f"{m['median']:,.0f} ms (max {m['max']:,.0f}; {s['recovered']}/{s['faults']} recovered)"


def rows_recovery(s: dict[str, Any], hang_bound_s: float | None) -> list[Row]:
    part, rows = "recovery", []
    base = s.get("supervisord")
    floor = s.get("floor_ms")
    for w in (1, 2):
        ours = s.get(f"selfheal_{w}w")
        if ours and ours["mttr_ms"] and base and base["mttr_ms"]:
            ratio = ours["mttr_ms"]["median"] / base["mttr_ms"]["median"]
            rows.append(
                row(
                    part,
                    f"`kill -9`, {workers(w)}: MTTR, selfheal / supervisord (1 process)",
                    ratio,
                    _mttr(ours),
                    _mttr(base),
                    "< 1",
                    ratio < 1,
                )
            )
    ours = s.get("selfheal_2w") or s.get("selfheal_1w")
    if ours and ours["mttr_ms"] and floor:
        ratio = ours["mttr_ms"]["median"] / floor["median"]
        rows.append(
            row(
                part,
                "`kill -9`: MTTR, selfheal / the service's cold start (the floor of a restart)",
                ratio,
                _mttr(ours),
                f"{floor['median']:,.0f} ms (spawn to `/health` 200, {s['floor_runs']} runs)",
                "< 1 (under the floor)",
                ratio < 1,
            )
        )
    for w in (1, 2):
        ours = s.get(f"selfheal_{w}w")
        if not (ours and base and ours["requests"] is not None and base["requests"] is not None):
            continue
        lost, base_lost = ours["failed"] + ours["refused"], base["failed"] + base["refused"]
        rows.append(
            row(
                part,
                f"`kill -9` under load (a request every 10 ms), {workers(w)}: failed + refused "
                "requests, selfheal / supervisord",
                div(lost, base_lost),
                f"{ours['failed']} failed, {ours['refused']} refused of {ours['requests']:,} "
                f"({ours['faults']} kills)",
                f"{base['failed']} failed, {base['refused']:,} refused of {base['requests']:,} "
                f"({base['faults']} kills)",
                "at most 1 per kill (the one in flight), none refused",
                ours["refused"] == 0 and ours["failed"] <= ours["faults"],
            )
        )
    hang = s.get("hang_2w")
    if hang and hang["mttr_ms"] and hang_bound_s:
        m = hang["mttr_ms"]
        rows.append(
            row(
                part,
                "hung worker (SIGSTOP), 2 workers: detection + replacement, selfheal / the "
                "configured bound",
                m["median"] / 1000 / hang_bound_s,
                f"{m['median'] / 1000:.2f} s (max {m['max'] / 1000:.2f}; "
                f"{hang['recovered']}/{hang['faults']})",
                f"{hang_bound_s:g} s bound; supervisord never notices a hung process",
                f"max within the bound + {HANG_BOUND_SLACK_S:g} s",
                m["max"] / 1000 <= hang_bound_s + HANG_BOUND_SLACK_S
                and hang["recovered"] == hang["faults"],
            )
        )
    return rows


# ----- model swap -------------------------------------------------------------------------------


def summarise_swap(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"cycles": raw.get("cycles")}
    for kind, key in (("in place", "in_place"), ("replace", "replace")):
        cycles = raw["cycles_data"][kind]
        load = raw["load"][kind]
        out[key] = {
            "decision_to_all_s": spread([c["decision_to_all_s"] for c in cycles]),
            "cycles": len(cycles),
            "requests": sum(x["requests"] for x in load),
            "failed": sum(x["failed"] for x in load),
            "refused": sum(x["refused"] for x in load),
            "slowest_ms": max(x["longest_s"] for x in load) * 1000,
        }
    return out


def rows_swap(s: dict[str, Any]) -> list[Row]:
    ours, base = s["in_place"], s["replace"]
    a, b = ours["decision_to_all_s"], base["decision_to_all_s"]
    ratio = a["median"] / b["median"]

    def lost(x: dict[str, Any]) -> str:
        return (
            f"{x['failed']} failed, {x['refused']} refused of {x['requests']:,} "
            f"(slowest {x['slowest_ms']:.0f} ms)"
        )

    return [
        row(
            "swap",
            "model change under load: decision to every worker on the new version, in place / "
            "replacing the workers",
            ratio,
            f"{a['median']:.2f} s ({a['min']:.2f}-{a['max']:.2f}, {ours['cycles']} cycles)",
            f"{b['median']:.2f} s ({b['min']:.2f}-{b['max']:.2f})",
            "< 1",
            ratio < 1,
        ),
        row(
            "swap",
            "model change under load (about 400 requests/s): failed + refused requests, in place "
            "/ replacing",
            div(ours["failed"] + ours["refused"], base["failed"] + base["refused"]),
            lost(ours),
            lost(base),
            "0 failed",
            ours["failed"] + ours["refused"] == 0,
        ),
    ]


# ----- drift ------------------------------------------------------------------------------------


def summarise_drift(raw: dict[str, Any]) -> dict[str, Any]:
    sizes = []
    for agg in raw["aggregated"]:
        entry: dict[str, Any] = {"rows": agg["rows"]}
        for tool in ("evidently", "selfheal", "naive"):
            t = agg[tool]
            entry[tool] = {
                "ms": {k: v * 1000 for k, v in t["seconds"].items()},
                "peak_mib": t["peak_mib"],
                "flagged": t["flagged"],
                "flags_stable": t["flags_stable"],
                "runs": t["runs"],
            }
        entry.update(
            time_ratio=agg["time_ratio"],
            memory_ratio=agg["memory_ratio"],
            same_flags=agg["same_flags"],
        )
        sizes.append(entry)
    rules = raw.get("sweep", {}).get("rules", [])
    return {
        "runs": raw.get("runs"),
        "sizes": sizes,
        "sweep_default_rule": rules[0] if rules else None,
    }


def rows_drift(s: dict[str, Any]) -> list[Row]:
    rows = []
    largest = max(e["rows"] for e in s["sizes"])
    for e in s["sizes"]:
        ev, us = e["evidently"], e["selfheal"]
        at_target = e["rows"] == 1_000_000
        rows.append(
            row(
                "drift",
                f"drift check, {e['rows']:,} rows: time, Evidently / selfheal",
                e["time_ratio"],
                f"{us['ms']['median']:,.1f} ms",
                f"{ev['ms']['median']:,.0f} ms",
                ">= 30" if at_target else "-",
                e["time_ratio"] >= 30 if at_target else None,
            )
        )
    for e in s["sizes"]:
        ev, us = e["evidently"], e["selfheal"]
        at_target = e["rows"] == 1_000_000
        rows.append(
            row(
                "drift",
                f"drift check, {e['rows']:,} rows: peak memory added, selfheal / Evidently",
                e["memory_ratio"],
                f"{us['peak_mib']['median']:,.1f} MiB",
                f"{ev['peak_mib']['median']:,.1f} MiB",
                "<= 0.5" if at_target else "-",
                e["memory_ratio"] <= 0.5 if at_target else None,
            )
        )
    agree = sum(
        e["same_flags"] and e["selfheal"]["flags_stable"] and e["evidently"]["flags_stable"]
        for e in s["sizes"]
    )
    top = next(e for e in s["sizes"] if e["rows"] == largest)
    rows.append(
        row(
            "drift",
            "drift verdicts: the same features flagged as Evidently (sizes agreeing, every run)",
            agree / len(s["sizes"]),
            ", ".join(top["selfheal"]["flagged"]) or "none",
            ", ".join(top["evidently"]["flagged"]) or "none",
            "the same at every size",
            agree == len(s["sizes"]),
        )
    )
    rule = s.get("sweep_default_rule")
    if rule:
        rows.append(
            row(
                "drift",
                f"near the thresholds (sweep of {rule['cases']} drifted feature cases): verdicts "
                "agreeing with Evidently",
                rule["agree"],
                f"{rule['only_selfheal']} flagged only by selfheal; "
                f"{rule['null_flags_selfheal']} false alarms",
                f"{rule['only_evidently']} only by Evidently; "
                f"{rule['null_flags_evidently']} false alarms",
            )
        )
    return rows


# ----- drift on Adult (mixed columns) ------------------------------------------------------------


def summarise_drift_adult(raw: dict[str, Any]) -> dict[str, Any]:
    agg = raw["aggregated"]
    entry: dict[str, Any] = {"rows": agg["rows"], "runs": raw.get("runs")}
    for tool in ("evidently", "selfheal", "evidently-default"):
        t = agg[tool]
        entry[tool] = {
            "ms": {k: v * 1000 for k, v in t["seconds"].items()},
            "peak_mib": t["peak_mib"],
            "flagged": t["flagged"],
            "flags_stable": t["flags_stable"],
        }
    entry.update(
        {
            key: agg[key]
            for key in (
                "time_ratio",
                "default_time_ratio",
                "memory_ratio",
                "same_flags",
                "default_same_flags",
                "only_selfheal",
                "only_evidently",
            )
        }
    )
    entry["encode_ms"] = agg["selfheal"]["encode_seconds"]["median"] * 1000
    return entry


def rows_drift_adult(s: dict[str, Any]) -> list[Row]:
    ev, us, default = s["evidently"], s["selfheal"], s["evidently-default"]
    at_target = s["rows"] == 1_000_000
    what = f"drift check, Adult (6 numeric + 8 categorical), {s['rows']:,} rows"
    stable = us["flags_stable"] and ev["flags_stable"]
    differs = ""
    if not s["same_flags"]:
        differs = (
            f" (only selfheal: {', '.join(s['only_selfheal']) or '-'}; "
            f"only Evidently: {', '.join(s['only_evidently']) or '-'})"
        )
    return [
        row(
            "drift_adult",
            f"{what}: time, Evidently (configured to selfheal's statistics) / selfheal",
            s["time_ratio"],
            f"{us['ms']['median']:,.1f} ms (encoding the rows, done per request when served: "
            f"{s['encode_ms']:,.0f} ms)",
            f"{ev['ms']['median']:,.0f} ms",
            ">= 30" if at_target else "-",
            s["time_ratio"] >= 30 if at_target else None,
        ),
        row(
            "drift_adult",
            f"{what}: time, Evidently's defaults (DataDriftPreset()) / selfheal",
            s["default_time_ratio"],
            f"{us['ms']['median']:,.1f} ms",
            f"{default['ms']['median']:,.0f} ms",
        ),
        row(
            "drift_adult",
            f"{what}: peak memory added, selfheal / Evidently (selfheal's statistics)",
            s["memory_ratio"],
            f"{us['peak_mib']['median']:,.1f} MiB",
            f"{ev['peak_mib']['median']:,.1f} MiB",
        ),
        row(
            "drift_adult",
            "drift verdicts on Adult: the same columns flagged as Evidently with selfheal's "
            "statistics (every run)",
            1.0 if s["same_flags"] and stable else 0.0,
            ", ".join(us["flagged"]) or "none",
            (", ".join(ev["flagged"]) or "none") + differs,
            "the same columns",
            bool(s["same_flags"] and stable),
        ),
        row(
            "drift_adult",
            "drift verdicts on Adult: the same columns flagged as Evidently's defaults",
            1.0 if s["default_same_flags"] else 0.0,
            ", ".join(us["flagged"]) or "none",
            ", ".join(default["flagged"]) or "none",
        ),
    ]


# ----- training -----------------------------------------------------------------------------------


def summarise_training(raw: dict[str, Any]) -> dict[str, Any]:
    agg = raw["aggregated"]
    out: dict[str, Any] = {"runs": raw.get("runs"), "load_average": raw.get("load_average")}
    for model in ("adult", "california"):
        if model in agg:
            m = agg[model]
            out[model] = {
                "seconds": m["seconds"],
                "process_seconds": m["process_seconds"],
                "phases": m["phases"],
                "metrics": m["metrics"],
                "target_s": m["target_s"],
                "met": m["met"],
            }
    return out


def rows_training(s: dict[str, Any]) -> list[Row]:
    adult, california = s.get("adult"), s.get("california")
    if not adult:
        return []
    ratio = div(adult["seconds"]["median"], california["seconds"]["median"]) if california else None

    def cell(m: dict[str, Any]) -> str:
        sec = m["seconds"]
        return f"{sec['median']:.1f} s ({sec['min']:.1f}-{sec['max']:.1f}; {s['runs']} runs)"

    return [
        row(
            "training",
            "first model as `selfheal run` trains it (ensure_model, empty state): time, "
            "Adult / the bundled California model",
            ratio,
            f"Adult {cell(adult)}, permutation importance "
            f"{adult['phases'].get('permutation importance', 0):.1f} s of it",
            f"California {cell(california)}" if california else "-",
            f"Adult < {adult['target_s']:.0f} s",
            adult["met"],
        )
    ]


# ----- serving ----------------------------------------------------------------------------------

SCENARIOS = (("single-c1", "1 row, c=1"), ("single-c16", "1 row, c=16"))
BATCHES = (("batch-c1", "1000 rows, c=1"), ("batch-c16", "1000 rows, c=16"))
P99_TARGET_MS = 10.0
OBSERVE_TARGET = 0.05


def summarise_serving(raw: dict[str, Any]) -> dict[str, Any]:
    def raw_rate(key: str) -> dict[str, Any] | None:
        r = raw.get(key)
        if not r:
            return None
        return {
            "one_row_rows_s": statistics.median(r["one_row_rows_s"]),
            "batch_rows_s": statistics.median(r["batch_rows_s"]),
            "openmp_threads": r.get("openmp_threads"),
        }

    return {
        "duration_s": raw.get("duration_s"),
        "runs": raw.get("runs_per_scenario"),
        "medians": raw.get("medians", {}),
        "raw_omp1": raw_rate("raw_omp1"),
        "raw_omp_default": raw_rate("raw_omp_default"),
        "selfheal_restarts": raw.get("selfheal_restarts_during_measurement"),
        "predict_path": raw.get("selfheal_predict_path"),
        "step_ms": (raw.get("raw_omp1") or {}).get("step_ms"),
        "load_average": raw.get("load_average"),
        "failure": raw.get("failure"),
    }


def _served(m: dict[str, Any]) -> str:
    one_row = m["rows_s"] == m["requests_s"]
    rate = f"{m['requests_s']:,.0f} req/s" if one_row else f"{m['rows_s']:,.0f} rows/s"
    errors = f"{m['errors']} error" + ("" if m["errors"] == 1 else "s")
    return f"{rate}, p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, {errors}"


def rows_serving(s: dict[str, Any], part: str = "serving") -> list[Row]:
    """selfheal against the bare app: issue 9's targets for California (``serving``); issue 16's
    for Adult (``serving_adult``: c=16 one-row throughput and p99 only, the rest shown without)."""
    m, rows = s["medians"], []
    adult = part == "serving_adult"
    targets = {"single-c16": 6.0} if adult else {"single-c1": 1.0, "single-c16": 6.0}
    for key, label in (*SCENARIOS, *BATCHES):
        ours, base = m.get(f"{key}/selfheal"), m.get(f"{key}/bare")
        if not (ours and base):
            continue
        ratio = ours["requests_s"] / base["requests_s"]
        target = targets.get(key)
        rows.append(
            row(
                part,
                f"{label}: throughput, selfheal / bare FastAPI app",
                ratio,
                _served(ours),
                _served(base),
                f">= {target:g}" if target else "-",
                ratio >= target if target else None,
            )
        )
    ours, base = m.get("single-c1/selfheal"), m.get("single-c1/bare")
    if ours and base:
        ratio = ours["p99_ms"] / base["p99_ms"]
        rows.append(
            row(
                part,
                "1 row, c=1: p99, selfheal / bare",
                ratio,
                f"{ours['p99_ms']:.2f} ms",
                f"{base['p99_ms']:.2f} ms",
                "-" if adult else "<= 1",
                None if adult else ratio <= 1,
            )
        )
    ours, base = m.get("single-c16/selfheal"), m.get("single-c16/bare")
    if ours and base:
        rows.append(
            row(
                part,
                "1 row, c=16: p99, selfheal / bare",
                ours["p99_ms"] / base["p99_ms"],
                f"{ours['p99_ms']:.2f} ms",
                f"{base['p99_ms']:.2f} ms",
                f"selfheal < {P99_TARGET_MS:g} ms",
                ours["p99_ms"] < P99_TARGET_MS,
            )
        )
    limit = s.get("raw_omp1")
    call = "`model.predict_proba` on a DataFrame" if adult else "`model.predict`"
    if limit:
        for key, label in BATCHES:
            ours = m.get(f"{key}/selfheal")
            if ours:
                ratio = ours["rows_s"] / limit["batch_rows_s"]
                rows.append(
                    row(
                        part,
                        f"{label}: rows/s, selfheal / raw in-process {call} (the limit)",
                        ratio,
                        f"{ours['rows_s']:,.0f} rows/s",
                        f"{limit['batch_rows_s']:,.0f} rows/s (1000-row calls, 1 thread)",
                        "-" if adult else ">= 0.5",
                        None if adult else ratio >= 0.5,
                    )
                )
        ours = m.get("single-c16/selfheal")
        if ours:
            rows.append(
                row(
                    part,
                    f"1 row, c=16: rows/s, selfheal / raw in-process one-row {call}",
                    ours["rows_s"] / limit["one_row_rows_s"],
                    f"{ours['rows_s']:,.0f} rows/s",
                    f"{limit['one_row_rows_s']:,.0f} rows/s (one row per call, 1 thread)",
                )
            )
    if adult and s.get("predict_path"):
        rows.append(
            row(
                part,
                "small batches: what selfheal's workers answer them with (the worker's log)",
                None,
                "; ".join(s["predict_path"]),
                "a pandas DataFrame of the request, `model.predict_proba`",
            )
        )
    costs = {
        label: 1 - m[f"{key}/selfheal"]["requests_s"] / m[f"{key}/unobserved"]["requests_s"]
        for key, label in (*SCENARIOS, *BATCHES)
        if f"{key}/selfheal" in m and f"{key}/unobserved" in m
    }
    if costs:
        worst = max(costs, key=lambda label: costs[label])
        rows.append(
            row(
                part,
                "capture and metrics: throughput, selfheal / the same with `service.observe = "
                "false` (the scenario where it costs most)",
                1 - costs[worst],
                f"{worst}: costs {costs[worst]:+.1%}",
                "; ".join(f"{label} {cost:+.1%}" for label, cost in costs.items()),
                "-" if adult else f">= {1 - OBSERVE_TARGET:.2f} (costs <= {OBSERVE_TARGET:.0%})",
                None if adult else costs[worst] <= OBSERVE_TARGET,
            )
        )
    return rows


# ----- against the peers (MLServer, BentoML) and the ceiling -------------------------------------

PEERS = ("mlserver", "bentoml")
PEER_TITLES = {"mlserver": "MLServer", "bentoml": "BentoML"}
PEER_C16_TARGET = 3.0  # one row at c=16: at least 3x the faster peer
CEILING_TARGET = 0.5  # ... and at least half the no-work route's throughput


def summarise_peers(raw: dict[str, Any]) -> dict[str, Any]:
    recovery = {}
    for app, cycles in (raw.get("recovery") or {}).items():
        done = [c for c in cycles if "error" not in c]
        recovery[app] = {
            "kills": len(done),
            "replaced_s": spread([c["replaced_s"] for c in done if c["replaced_s"] is not None]),
            "not_replaced": sum(c["replaced_s"] is None for c in done),
            "client_failed": sum(c["client_failed"] for c in done),
            "client_requests": sum(c["client_requests"] for c in done),
            "client_longest_ms": max((c["client_longest_s"] * 1000 for c in done), default=None),
            "errors": [c["error"] for c in cycles if "error" in c],
        }
    return {
        "model": raw.get("model"),
        "duration_s": raw.get("duration_s"),
        "runs": raw.get("runs_per_scenario"),
        "medians": raw.get("medians", {}),
        "mlserver_batching": raw.get("mlserver_batching"),
        "cold_start_s": {k: spread(v) for k, v in (raw.get("cold_start_s") or {}).items()},
        "memory_idle": raw.get("memory_idle", {}),
        "recovery": recovery,
        "versions": {
            k: v
            for k, v in (raw.get("versions") or {}).items()
            if k.startswith(("mlserver", "bentoml", "uvicorn ("))
        },
        "failure": raw.get("failure"),
    }


def _recovered(r: dict[str, Any]) -> str:
    replaced = r["replaced_s"]
    when = (
        f"2 workers again after {replaced['median']:.2f} s (max {replaced['max']:.2f})"
        if replaced
        else "never"
    )
    if r["not_replaced"]:
        when += f", {r['not_replaced']} not replaced in 30 s"
    longest = r["client_longest_ms"]
    return (
        f"{when}; the client: {r['client_failed']} failed of {r['client_requests']:,}, longest "
        + (f"{longest:,.0f} ms" if longest is not None else "-")
        + f" ({r['kills']} kills)"
    )


def rows_peers(s: dict[str, Any], part: str = "peers") -> list[Row]:
    """selfheal against MLServer, BentoML and the no-work route: issue 19's targets."""
    m, rows = s["medians"], []
    ours16 = m.get("single-c16/selfheal")
    for key, label in (*SCENARIOS, *BATCHES):
        ours = m.get(f"{key}/selfheal")
        if not ours:
            continue
        floor = PEER_C16_TARGET if key == "single-c16" else 1.0
        for peer in PEERS:
            theirs = m.get(f"{key}/{peer}")
            if theirs:
                ratio = ours["requests_s"] / theirs["requests_s"]
                rows.append(
                    row(
                        part,
                        f"{label}: throughput, selfheal / {PEER_TITLES[peer]}",
                        ratio,
                        _served(ours),
                        _served(theirs),
                        f">= {floor:g}",
                        ratio >= floor,
                    )
                )
        oip, mlserver = m.get(f"{key}/selfheal OIP"), m.get(f"{key}/mlserver")
        if oip and mlserver:
            rows.append(
                row(
                    part,
                    f"{label}: throughput, selfheal's OIP route / MLServer (the same body bytes)",
                    oip["requests_s"] / mlserver["requests_s"],
                    _served(oip),
                    _served(mlserver),
                )
            )
        ceiling = m.get(f"{key}/ceiling")
        if ceiling:
            ratio = ours["requests_s"] / ceiling["requests_s"]
            target = key == "single-c16"
            rows.append(
                row(
                    part,
                    f"{label}: throughput, selfheal / the ceiling (a no-work route, same stack)",
                    ratio,
                    _served(ours),
                    _served(ceiling),
                    f">= {CEILING_TARGET:g}" if target else "-",
                    ratio >= CEILING_TARGET if target else None,
                )
            )
    if ours16:
        rows.append(
            row(
                part,
                "1 row, c=16: selfheal's p99",
                None,
                f"{ours16['p99_ms']:.2f} ms",
                ", ".join(
                    f"{PEER_TITLES[p]} {m[f'single-c16/{p}']['p99_ms']:.2f} ms"
                    for p in PEERS
                    if f"single-c16/{p}" in m
                ),
                f"< {P99_TARGET_MS:g} ms",
                ours16["p99_ms"] < P99_TARGET_MS,
            )
        )
    one, ceil1 = m.get("single-c1/selfheal"), m.get("single-c1/ceiling")
    if one and ceil1:
        rows.append(
            row(
                part,
                "1 row, c=1: what selfheal's request path costs on top of the no-work route (p50)",
                one["p50_ms"] / ceil1["p50_ms"],
                f"p50 {one['p50_ms']:.3f} ms: +{(one['p50_ms'] - ceil1['p50_ms']) * 1000:.0f} us "
                "per request",
                f"p50 {ceil1['p50_ms']:.3f} ms",
            )
        )
    cold = s.get("cold_start_s") or {}
    memory = s.get("memory_idle") or {}
    recovery = s.get("recovery") or {}
    for peer in PEERS:
        ours_c, theirs_c = cold.get("selfheal"), cold.get(peer)
        if ours_c and theirs_c:
            rows.append(
                row(
                    part,
                    f"cold start (spawn to the first 200 of a prediction), selfheal / "
                    f"{PEER_TITLES[peer]}",
                    ours_c["median"] / theirs_c["median"],
                    f"{ours_c['median']:.2f} s (max {ours_c['max']:.2f})",
                    f"{theirs_c['median']:.2f} s (max {theirs_c['max']:.2f})",
                )
            )
        ours_m, theirs_m = memory.get("selfheal"), memory.get(peer)
        if ours_m and theirs_m:
            rows.append(
                row(
                    part,
                    f"memory of the serving tree at idle, PSS, selfheal / {PEER_TITLES[peer]}",
                    ours_m["tree_pss_mib"] / theirs_m["tree_pss_mib"],
                    f"{ours_m['tree_pss_mib']:.0f} MiB ({ours_m['processes']} processes)",
                    f"{theirs_m['tree_pss_mib']:.0f} MiB ({theirs_m['processes']} processes)",
                )
            )
        ours_r, theirs_r = recovery.get("selfheal"), recovery.get(peer)
        if ours_r and theirs_r and ours_r["kills"] and theirs_r["kills"]:
            rows.append(
                row(
                    part,
                    f"`kill -9` of a worker under a client (a request every 10 ms), selfheal / "
                    f"{PEER_TITLES[peer]}: failed requests",
                    div(ours_r["client_failed"], theirs_r["client_failed"]),
                    _recovered(ours_r),
                    _recovered(theirs_r),
                )
            )
    return rows


# ----- footprint and growth ---------------------------------------------------------------------


def summarise_footprint(raw: dict[str, Any]) -> dict[str, Any]:
    keep = ("settle_s", "window_s", "windows", "workers", "selfheal_defaults", "summary")
    return {key: raw[key] for key in keep if key in raw}


def rows_footprint(s: dict[str, Any]) -> list[Row]:
    ours, base, rows = s["summary"]["selfheal"], s["summary"]["supervisord"], []
    for key, mean, label in (
        ("root_cpu_pct", "mean_root_cpu_pct", "the supervisor process: CPU, % of one core"),
        ("tree_cpu_pct", "mean_tree_cpu_pct", "the whole tree (with 2 workers): CPU, % of a core"),
    ):
        rows.append(
            row(
                "footprint",
                f"idle, {label}, selfheal / supervisord",
                div(ours[key]["median"], base[key]["median"]),
                f"{ours[key]['median']:.2f}% (mean over the span {ours[mean]:.2f}%)",
                f"{base[key]['median']:.2f}% (mean {base[mean]:.2f}%)",
            )
        )
    rss = "root_rss_mib"
    rows.append(
        row(
            "footprint",
            "idle, the supervisor process: RSS, selfheal / supervisord",
            div(ours[rss]["median"], base[rss]["median"]),
            f"{ours[rss]['median']:.0f} MiB",
            f"{base[rss]['median']:.0f} MiB",
        )
    )

    def tree(x: dict[str, Any]) -> str:
        return (
            f"{x['tree_pss_mib']['median']:.0f} MiB PSS ({x['tree_rss_mib']['median']:.0f} MiB "
            f"RSS, {x['processes']} processes)"
        )

    rows.append(
        row(
            "footprint",
            "idle, the whole tree: PSS (shared pages counted once), selfheal / supervisord",
            div(ours["tree_pss_mib"]["median"], base["tree_pss_mib"]["median"]),
            tree(ours),
            tree(base),
        )
    )
    return rows


def summarise_growth(raw: dict[str, Any]) -> dict[str, Any]:
    drift, report = raw["drift"], raw["report"]
    return {
        "runs": raw.get("runs"),
        "drift_ms": {k: v["median"] * 1000 for k, v in drift["seconds"].items()},
        "drift_steps": drift["steps"],
        "report_ms": {k: v["total_s"]["median"] * 1000 for k, v in report["in_process"].items()},
        "report_cli_s": {k: v["median"] for k, v in report["cli"].items()},
        "report_steps": report["in_process_steps"],
        "report_cli_steps": report["cli_steps"],
        "trails": report["trails"],
    }


def rows_growth(s: dict[str, Any]) -> list[Row]:
    rows = []
    target = f"<= {10 * LINEAR_SLACK:g} (about linear)"
    for step in s["drift_steps"]:
        a, b = s["drift_ms"][str(step["from"])], s["drift_ms"][str(step["to"])]
        rows.append(
            row(
                "growth",
                f"drift check, {step['from']:,} -> {step['to']:,} rows: time, x per tenfold step",
                step["time_ratio"],
                f"{a:,.1f} -> {b:,.1f} ms",
                "10 = linear",
                target,
                step["time_ratio"] <= 10 * LINEAR_SLACK,
            )
        )
    cli = {c["to"]: c["time_ratio"] for c in s["report_cli_steps"]}

    def gz(size: int) -> str:
        trail = s["trails"][str(size)]
        return f"{trail.get('in_gzip', 0) / trail['records']:.0%}"

    for step in s["report_steps"]:
        a, b = s["report_ms"][str(step["from"])], s["report_ms"][str(step["to"])]
        ca, cb = s["report_cli_s"][str(step["from"])], s["report_cli_s"][str(step["to"])]
        rows.append(
            row(
                "growth",
                f"`selfheal report`, {step['from']:,} -> {step['to']:,} audit records: time, "
                "x per tenfold step",
                step["time_ratio"],
                f"{a:,.0f} -> {b:,.0f} ms read + build; records gzipped "
                f"{gz(step['from'])} -> {gz(step['to'])} (CLI {ca:.2f} -> {cb:.2f} s, "
                f"x {cli[step['to']]:.1f})",
                "10 = linear",
                target,
                step["time_ratio"] <= 10 * LINEAR_SLACK,
            )
        )
    return rows


# ----- the Ray Serve backend ----------------------------------------------------------------------

RAY_SCENARIOS = (
    ("single-c1", "1 row, c=1"),
    ("single-c16", "1 row, c=16"),
    ("batch-c1", "1000 rows, c=1"),
    ("batch-c16", "1000 rows, c=16"),
)


def summarise_ray(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"replicas": raw.get("replicas"), "scenarios": {}}
    for key, _label in RAY_SCENARIOS:
        out["scenarios"][key] = {
            backend: {
                "requests_s": statistics.median(r["requests_s"] for r in runs),
                "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "runs": len(runs),
            }
            for backend, runs in (("local", raw["local"][key]), ("ray", raw["ray"]["wrk"][key]))
        }
    out["promotion_s"] = spread([p["seconds"] for p in raw["ray"]["promotions"]])
    out["promotions"] = len(raw["ray"]["promotions"])
    out["cold_start_s"] = raw["ray"]["cold_start_s"]
    restarts = raw["ray"].get("restarts") or []  # absent from runs before restarts were timed
    if restarts:
        out["restart_s"] = spread([r["seconds"] for r in restarts])
        out["restarts"] = len(restarts)
        out["restart_failed"] = sum(r["failed"] for r in restarts)
        out["restart_requests"] = sum(r["ok"] + r["failed"] for r in restarts)
    return out


def rows_ray(s: dict[str, Any]) -> list[Row]:
    def served(m: dict[str, Any]) -> str:
        return f"{m['requests_s']:,.0f} req/s, p99 {m['p99_ms']:.1f} ms, {m['errors']} errors"

    n = s["replicas"]
    rows = [
        row(
            "ray",
            f"{label}: throughput, Ray Serve backend / local backend ({n} replicas each)",
            div(m["ray"]["requests_s"], m["local"]["requests_s"]),
            served(m["ray"]),
            served(m["local"]),
        )
        for key, label in RAY_SCENARIOS
        for m in (s["scenarios"][key],)
    ]
    p = s["promotion_s"]
    rows.append(
        row(
            "ray",
            "a promotion: publish, reconfigure and every Ray replica confirming the new version",
            None,
            f"{p['median']:.2f} s ({p['min']:.2f}-{p['max']:.2f}, {s['promotions']} promotions)",
            f"first deploy from no cluster {s['cold_start_s']:.1f} s",
        )
    )
    if "restart_s" in s:
        r = s["restart_s"]
        rows.append(
            row(
                "ray",
                "selfheal restart on Ray: every replica replaced, one after the other, under load",
                None,
                f"{r['median']:.2f} s ({r['min']:.2f}-{r['max']:.2f}, {s['restarts']} restarts)",
                f"{s['restart_failed']} of {s['restart_requests']} requests failed",
            )
        )
    return rows


SUMMARISE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "recovery": summarise_recovery,
    "swap": summarise_swap,
    "drift": summarise_drift,
    "drift_adult": summarise_drift_adult,
    "serving": summarise_serving,
    "serving_adult": summarise_serving,
    "footprint": summarise_footprint,
    "growth": summarise_growth,
    "training": summarise_training,
    "peers": summarise_peers,
    "peers_adult": summarise_peers,
    "ray": summarise_ray,
}


# What a part must have measured to count as done (a scenario that could not start is only
# printed by bench/recovery.py, which goes on with the others and exits 0).
REQUIRED = {"recovery": ("selfheal_1w", "selfheal_2w", "supervisord", "floor_ms")}


def missing(part: str, summary: dict[str, Any]) -> list[str]:
    return [key for key in REQUIRED.get(part, ()) if not summary.get(key)]


def rows_for(part: str, summary: dict[str, Any], hang_bound_s: float | None) -> list[Row]:
    if part == "recovery":
        return rows_recovery(summary, hang_bound_s)
    return {
        "swap": rows_swap,
        "drift": rows_drift,
        "drift_adult": rows_drift_adult,
        "serving": rows_serving,
        "serving_adult": lambda summary: rows_serving(summary, "serving_adult"),
        "footprint": rows_footprint,
        "growth": rows_growth,
        "training": rows_training,
        "peers": rows_peers,
        "peers_adult": lambda summary: rows_peers(summary, "peers_adult"),
        "ray": rows_ray,
    }[part](summary)
