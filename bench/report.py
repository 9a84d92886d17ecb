"""The benchmark's arithmetic and tables: ratios, medians, scaling pairs, merged result files and the markdown
report (the numbers docs/benchmarks.md quotes). Reads result dicts only; runs nothing."""

from __future__ import annotations

import functools
import statistics
from typing import Any

PHASES = ("A", "B", "C", "C_dps", "H")


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    if not numerator or not denominator or not denominator["wall_s"]:
        return None
    return round(numerator["wall_s"] / denominator["wall_s"], 3)


def cell_ratios(phases: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Ratios from the same cell (pair by pair): < 1 means C took less wall time."""
    a, b, c = phases.get("A", {}), phases.get("B", {}), phases.get("C", {})
    return {
        "C/A_first": ratio(c.get("first"), a.get("first")),
        "C/B_first": ratio(c.get("first"), b.get("first")),
        "C/A_rerun": ratio(c.get("rerun"), a.get("rerun")),
        "C/B_rerun": ratio(c.get("rerun"), b.get("rerun")),
        "C_rerun/C_first": ratio(c.get("rerun"), c.get("first")),
        "B_rerun/B_first": ratio(b.get("rerun"), b.get("first")),
    }


# --- summary and report -------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["key_type"], cell["size"]), []).append(cell)
    summary = []
    for (key_type, size), group in groups.items():
        row: dict[str, Any] = {"key_type": key_type, "size": size, "runs": len(group)}
        for phase in PHASES:
            for tag in ("first", "rerun"):
                runs = [cell["phases"][phase][tag] for cell in group if phase in cell["phases"]]
                if not runs:
                    continue
                for metric in ("wall_s", "peak_rss_tree_mib", "peak_pss_tree_mib", "max_rss_single_mib"):
                    row[f"{phase}_{tag}_{metric}"] = median([run[metric] for run in runs])
                row[f"{phase}_{tag}_changed_max"] = max(run["changed"] or 0 for run in runs)
                if phase == "C_dps":
                    row[f"{phase}_{tag}_devices_per_min"] = median([run["devices_per_min"] for run in runs])
                per_device = [
                    operations_per_device(run["dps_operations"], size) for run in runs if "dps_operations" in run
                ]
                if per_device:
                    row[f"{phase}_{tag}_dps_ops_per_device"] = median(per_device)
        for name in group[0]["ratios"]:
            row[f"ratio {name}"] = median([cell["ratios"][name] for cell in group])
        summary.append(row)
    return summary


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report(results: dict[str, Any]) -> str:
    """Markdown tables of the medians and the per-run ratios (bench/provision.py's results: provision_report)."""
    settings = results["settings"]
    if settings.get("playbook") == "playbooks/provision.yml":
        return provision_report(results)
    out = []
    out.append(f"Command: `{results['command']}`  ")
    out.append(
        f"Started {results['started']}, finished {results.get('finished', '?')}; forks {settings['forks']}, "
        f"{settings.get('slices', 1)} slice(s), {settings['repeats']} repeat(s) per cell.  "
    )
    machine = results["machine"]
    out.append(
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, Linux "
        f"{machine['kernel']}, Python {machine['python']}, {machine['ansible_core']}, {machine['openssl']}, "
        f"cryptography {machine['cryptography']}.  "
    )
    if settings.get("target") in ("podman", "ssh"):
        out.append(f"Hosts: one container per device ({settings['image']}), {settings['ansible_cfg']}.  ")
    quota = settings.get("dps_emulator", {}).get("operations_per_minute")
    if quota:
        out.append(f"DPS emulator quota: {quota} operations per calendar minute (429 + Retry-After beyond it).  ")
    out.append(f"Load average (1/5/15 min) at start {results['load_start']}, at end {results.get('load_end')}.")
    if not results.get("complete", True):
        out.append("")
        out.append("**Incomplete run**: interrupted after the cells listed below.")
    out.append("")
    out.append(
        "Wall time, seconds (median of the repeats); `re` = re-run with nothing to do, `ch` = its changed count "
        "(max over the repeats)."
    )
    out.append("")
    out.append(
        "| key | N | A first | B first | C first | A re | B re (ch) | C re (ch) | C DPS first | DPS dev/min "
        "| DPS re (ch) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        g = row.get
        out.append(
            f"| {row['key_type']} | {row['size']} | {fmt(g('A_first_wall_s'))} | {fmt(g('B_first_wall_s'))} | "
            f"{fmt(g('C_first_wall_s'))} | {fmt(g('A_rerun_wall_s'))} | {fmt(g('B_rerun_wall_s'))} "
            f"({fmt(g('B_rerun_changed_max'))}) | {fmt(g('C_rerun_wall_s'))} ({fmt(g('C_rerun_changed_max'))}) | "
            f"{fmt(g('C_dps_first_wall_s'))} | {fmt(g('C_dps_first_devices_per_min'))} | "
            f"{fmt(g('C_dps_rerun_wall_s'))} ({fmt(g('C_dps_rerun_changed_max'))}) |"
        )
    out.append("")
    out.append("Ratios, computed pair by pair inside each run, then the median over the repeats (< 1: C is faster).")
    out.append("")
    out.append("| key | N | C/A first | C/B first | C/A re | C/B re | C re / C first | B re / B first |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        out.append(
            f"| {row['key_type']} | {row['size']} | {fmt(row.get('ratio C/A_first'), 2)} | "
            f"{fmt(row.get('ratio C/B_first'), 2)} | {fmt(row.get('ratio C/A_rerun'), 2)} | "
            f"{fmt(row.get('ratio C/B_rerun'), 2)} | {fmt(row.get('ratio C_rerun/C_first'), 2)} | "
            f"{fmt(row.get('ratio B_rerun/B_first'), 2)} |"
        )
    out.append("")
    out.append(
        "Controller peak memory, MiB (median), sampled every 0.2 s over ansible-playbook and all its "
        "descendants: summed PSS (shared pages counted once) / summed RSS (shared pages counted in every "
        "process) / the largest single process (wait4 ru_maxrss)."
    )
    out.append("")
    out.append("| key | N | A first | B first | C first | C re | C DPS first |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        cells = []
        for name in ("A_first", "B_first", "C_first", "C_rerun", "C_dps_first"):
            cells.append(
                f"{fmt(row.get(name + '_peak_pss_tree_mib'), 0)} / {fmt(row.get(name + '_peak_rss_tree_mib'), 0)} / "
                f"{fmt(row.get(name + '_max_rss_single_mib'), 0)}"
            )
        out.append(f"| {row['key_type']} | {row['size']} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Every run (wall s; ratios of that run):")
    out.append("")
    out.append("| key | N | rep | A | B | C | A re | B re | C re | DPS | DPS re | C/A | C/B | C/B re | load 1 min |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for cell in results["cells"]:
        p = cell["phases"]
        r = cell["ratios"]
        w = functools.partial(wall_of, p)
        out.append(
            f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | {w('A', 'first')} | {w('B', 'first')} | "
            f"{w('C', 'first')} | {w('A', 'rerun')} | {w('B', 'rerun')} | {w('C', 'rerun')} | {w('C_dps', 'first')} | "
            f"{w('C_dps', 'rerun')} | {fmt(r['C/A_first'], 2)} | {fmt(r['C/B_first'], 2)} | {fmt(r['C/B_rerun'], 2)} | "
            f"{cell['load_before'][0]} → {cell['load_after'][0]} |"
        )
    out.extend(cpu_report(results["cells"]))
    out.extend(dps_operations_report(results["summary"], results["cells"]))
    out.extend(hub_report(results["cells"]))
    out.extend(slices_report(results["cells"]))
    rows = scaling(results["cells"])
    if rows:
        out.append("")
        out.append(
            "Scaling of C, pair by pair inside each run: wall time at N over wall time at the smallest N of the "
            "same key type and repeat (issue 6: 1,000 devices in <= 7.5x the 150-device time)."
        )
        out.append("")
        out.append("| key | N / base N | phase | per run: base s → N s = ratio | median |")
        out.append("|---|---|---|---|---:|")
        for row in rows:
            per_run = "; ".join(
                f"{run}: {fmt(base)} → {fmt(wall)} = {fmt(value, 2)}" for run, base, wall, value in row["per_run"]
            )
            out.append(
                f"| {row['key_type']} | {row['size']} / {row['base_size']} | {row['tag']} | {per_run} | "
                f"{fmt(row['median'], 2)} |"
            )
    return "\n".join(out) + "\n"


def cpu_of(run: dict[str, Any]) -> float:
    return run["cpu_user_s"] + run["cpu_sys_s"]


def cpu_report(cells: list[dict[str, Any]]) -> list[str]:
    """Controller CPU (user + sys of ansible-playbook and all its descendants) per device, per C phase and run."""
    names = [("C", "first"), ("C", "rerun"), ("C_dps", "first"), ("C_dps", "rerun")]
    rows = []
    for cell in cells:
        phases = cell["phases"]
        values = [fmt(cpu_of(phases[phase][tag]) / cell["size"], 3) if phase in phases else "-" for phase, tag in names]
        if any(value != "-" for value in values):
            rows.append(f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | " + " | ".join(values) + " |")
    if not rows:
        return []
    return [
        "",
        "Controller CPU seconds per device (user + sys of the whole process tree, every slice summed): what an "
        "execution node spends on each device.",
        "",
        "| key | N | rep | C first | C re | C DPS first | C DPS re |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def operations_per_device(counted: dict[str, Any], size: int) -> float:
    """DPS operations billed in a phase (its `dps_operations`, the emulator's count: polls are not operations) per
    device of the fleet."""
    return round(counted["total"] / size, 3)


def operation_kinds(counted: dict[str, Any]) -> str:
    """The billed kinds of a phase's count, largest first ("register 150 + lookup 150"); polls apart, not billed."""
    billed = sorted(
        ((count, kind) for kind, count in counted["by_kind"].items() if kind != "poll"),
        key=lambda item: (-item[0], item[1]),
    )
    text = " + ".join(f"{kind} {count}" for count, kind in billed) or "none"
    polls = counted["by_kind"].get("poll")
    return f"{text} (poll {polls})" if polls else text


def dps_operations_report(summary: list[dict[str, Any]], cells: list[dict[str, Any]]) -> list[str]:
    """DPS operations per device of every phase that made any (the emulator's count, as DPS bills them): the medians,
    then every run with its kinds, throttled requests (429 of the quota) and the busiest minute."""
    phases = [
        phase
        for phase in PHASES
        if any(
            run.get("dps_operations", {}).get("total") or run.get("dps_operations", {}).get("throttled")
            for cell in cells
            for run in cell["phases"].get(phase, {}).values()
            if isinstance(run, dict)  # the DPS phase also keeps registered_devices (an int) beside its runs
        )
    ]
    if not phases:
        return []
    medians = []
    for row in summary:
        values = [
            (row.get(f"{phase}_first_dps_ops_per_device"), row.get(f"{phase}_rerun_dps_ops_per_device"))
            for phase in phases
        ]
        medians.append(
            f"| {row['key_type']} | {row['size']} | "
            + " | ".join(f"{fmt(first, 3)} | {fmt(rerun, 3)}" for first, rerun in values)
            + " |"
        )
    runs = []
    for cell in cells:
        for phase in phases:
            for tag in ("first", "rerun"):
                run = cell["phases"].get(phase, {}).get(tag)
                if not run or "dps_operations" not in run:
                    continue
                counted = run["dps_operations"]
                busiest = max((minute["operations"] for minute in counted["per_minute"]), default=0)
                runs.append(
                    f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | {phase} | {tag} | "
                    f"{counted['total']} | {fmt(operations_per_device(counted, cell['size']), 3)} | "
                    f"{operation_kinds(counted)} | {counted['throttled']} | {busiest} |"
                )
    header = " | ".join(f"{phase} first | {phase} re" for phase in phases)
    return [
        "",
        "DPS operations per device (the emulator's count, as DPS bills them: every device and service API call, each "
        "query page; polling is not an operation), median over the repeats; only phases that made any.",
        "",
        f"| key | N | {header} |",
        "|---|---:|" + "---:|" * (2 * len(phases)),
        *medians,
        "",
        "Every run: operations billed, per device, by kind (polls in brackets, not billed), requests throttled by the "
        "quota (429), and the busiest calendar minute's operations.",
        "",
        "| key | N | rep | phase | run | operations | per device | kinds | throttled | busiest minute |",
        "|---|---:|---:|---|---|---:|---:|---|---:|---:|",
        *runs,
    ]


def provision_report(results: dict[str, Any]) -> str:
    """bench/provision.py's results (the whole provision.yml, first run and re-run per cell): controller CPU and tasks
    ok per device, DPS operations per device and throttled requests (the emulator's count; "-" in files from before
    it), wall time and, under a quota, the least wall time the quota allows for those operations."""
    settings = results["settings"]
    quota = settings.get("dps_emulator", {}).get("operations_per_minute")
    out = [
        f"Command: `{results['command']}`  ",
        f"Started {results['started']}, finished {results.get('finished', '?')}; {settings['playbook']}, target "
        f"{settings['target']}, forks {settings['forks']}; load average at start {results['load_start']}.  ",
    ]
    if quota:
        out.append(f"DPS emulator quota: {quota} operations per calendar minute (429 + Retry-After beyond it).  ")
    out += [
        "",
        "Per cell and run: controller CPU s and tasks ok per device, DPS operations per device (as DPS bills them, "
        "polls apart), requests throttled (429), the busiest calendar minute's operations, wall s and the least wall "
        "the quota allows for those operations (operations / quota minutes).",
        "",
        "| N | rep | run | CPU s / device | tasks ok / device | changed | DPS ops / device | kinds | throttled "
        "| busiest minute | wall s | quota min wall s |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        for tag in ("first", "rerun"):
            run = cell.get(tag)
            if not run:
                continue
            counted = run.get("dps_operations")
            if counted:
                busiest = max((minute["operations"] for minute in counted["per_minute"]), default=0)
                dps = (
                    f"{fmt(operations_per_device(counted, cell['size']), 3)} | {operation_kinds(counted)} | "
                    f"{counted['throttled']} | {busiest}"
                )
            else:
                dps = "- | - | - | -"
            out.append(
                f"| {cell['size']} | {cell['repeat']} | {tag} | {fmt(run['cpu_s_per_device'], 3)} | "
                f"{fmt(run['tasks_ok_per_device'], 2)} | {run['changed']} | {dps} | {fmt(run['wall_s'])} | "
                f"{fmt(run.get('quota_min_wall_s'))} |"
            )
    return "\n".join(out) + "\n"


HUB_REQUESTS = ("configurations", "list", "prune", "devices")


def hub_report(cells: list[dict[str, Any]]) -> list[str]:
    """Method H (the IoT Hub deployments and twin tag sync of provision.yml): per run and tag, wall, controller CPU
    in all and per device, what changed and the IoT Hub requests by module; then the medians over the runs."""
    rows, per_tag = [], {}
    for cell in cells:
        for tag in ("first", "rerun"):
            run = cell["phases"].get("H", {}).get(tag)
            if not run:
                continue
            hub = run["hub"]
            requests = sum(hub[name] for name in HUB_REQUESTS)
            cpu = cpu_of(run)
            per_tag.setdefault((cell["size"], tag), []).append((run["wall_s"], cpu, cpu / cell["size"], requests))
            rows.append(
                f"| {cell['size']} | {cell['repeat']} | {tag} | {fmt(run['wall_s'])} | {fmt(cpu, 2)} | "
                f"{fmt(cpu / cell['size'], 4)} | {hub['configurations_changed']} | {hub['devices_changed']} | "
                f"{requests} ({' + '.join(str(hub[name]) for name in HUB_REQUESTS)}) | {hub['retried']} | "
                f"{fmt(run['peak_pss_tree_mib'], 0)} |"
            )
    if not rows:
        return []
    medians = [
        f"| {size} | {tag} | {fmt(median([v[0] for v in values]))} | {fmt(median([v[1] for v in values]), 2)} | "
        f"{fmt(median([v[2] for v in values]), 4)} | {fmt(median([v[3] for v in values]), 0)} |"
        for (size, tag), values in per_tag.items()
    ]
    return [
        "",
        "IoT Hub deployments (H: the role iothub_deployment as provision.yml runs it, on the controller, run_once), "
        "medians over the runs: wall s, controller CPU s (user + sys of the process tree) in all and per device, IoT "
        "Hub requests.",
        "",
        "| N | run | wall s | CPU s | CPU s / device | requests |",
        "|---:|---|---:|---:|---:|---:|",
        *medians,
        "",
        "Every H run: configurations and devices changed; requests = configurations (iothub_configuration, one task "
        "per deployment) + list (iothub_configuration_info, for prune) + prune + devices (iothub_device: twin "
        "queries and writes); retried = requests sent again (429/5xx); PSS = peak memory, MiB.",
        "",
        "| N | rep | run | wall s | CPU s | CPU s / device | configs changed | devices changed | requests | retried "
        "| PSS |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
        *rows,
    ]


def slices_report(cells: list[dict[str, Any]]) -> list[str]:
    """Per-slice wall and CPU of sliced phases (--slices N), and the total."""
    rows = []
    for cell in cells:
        for phase in ("C", "C_dps"):
            for tag in ("first", "rerun"):
                run = cell["phases"].get(phase, {}).get(tag)
                if not run or "slices" not in run:
                    continue
                label = f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | {phase} {tag}"
                for index, part in enumerate(run["slices"], start=1):
                    rows.append(
                        f"{label} | {index} | {part['hosts']} | {fmt(part['wall_s'])} | "
                        f"{fmt(part['cpu_user_s'] + part['cpu_sys_s'])} | {part['changed']} |"
                    )
                rows.append(
                    f"{label} | all | {run['hosts']} | {fmt(run['wall_s'])} | {fmt(cpu_of(run))} | {run['changed']} |"
                )
    if not rows:
        return []
    return [
        "",
        "Slices (AWX job slicing: concurrent ansible-playbook processes with disjoint --limit, each with the forks "
        "above); `all` = wall from the first start to the last end, CPU and changed summed.",
        "",
        "| key | N | rep | phase | slice | hosts | wall s | CPU s | changed |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|",
        *rows,
    ]


def scaling(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """C's wall time at each larger fleet size over the smallest size of the same key type and repeat.

    Both cells come from the same run (same file, same repeat number), so the ratio is read from one run, as
    issue 6's 1,000-device target asks; with several repeats the median is reported too. In merged files a
    cell is paired only with cells of its own file."""
    by_key: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for cell in cells:
        if "C" in cell["phases"]:
            run = cell.get("run", f"r{cell['repeat']}")
            by_key.setdefault(cell["key_type"], {}).setdefault(cell["size"], {})[run] = cell["phases"]["C"]
    rows = []
    for key_type, sizes in by_key.items():
        base_size = min(sizes)
        for size in sorted(sizes):
            if size == base_size:
                continue
            pairs = [(run, sizes[base_size][run], c) for run, c in sizes[size].items() if run in sizes[base_size]]
            if not pairs:
                continue
            for tag in ("first", "rerun"):
                per_run = [
                    (run, base[tag]["wall_s"], c[tag]["wall_s"], ratio(c[tag], base[tag])) for run, base, c in pairs
                ]
                rows.append(
                    {
                        "key_type": key_type,
                        "size": size,
                        "base_size": base_size,
                        "tag": tag,
                        "per_run": per_run,
                        "median": median([value for *_, value in per_run]),
                    }
                )
    return rows


def wall_of(phases: dict[str, Any], phase: str, tag: str) -> str:
    return fmt(phases[phase][tag]["wall_s"]) if phase in phases else "-"


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files of the same cells (same code, machine and settings) as one: medians over all runs."""
    first = runs[0]
    for other in runs[1:]:
        for field in ("machine", "settings"):
            # Files written before --target existed were local runs.
            defaults = {"target": "local", "image": None, "slices": 1} if field == "settings" else {}
            # A new boot of the same machine kind may carry another kernel build; it is listed, not compared.
            ignored = ("repeats", "kernel")
            mine = {k: v for k, v in {**defaults, **first[field]}.items() if k not in ignored}
            theirs = {k: v for k, v in {**defaults, **other[field]}.items() if k not in ignored}
            if mine != theirs:
                raise SystemExit(f"report: the files differ in {field}; medians over them would mix two setups")
    merged = dict(first)
    kernels = dict.fromkeys(run["machine"]["kernel"] for run in runs)
    merged["machine"] = {**first["machine"], "kernel": " / ".join(kernels)}
    merged["command"] = " + ".join(run["command"] for run in runs)
    merged["started"] = min(run["started"] for run in runs)
    merged["finished"] = max(run.get("finished", "?") for run in runs)
    merged["load_end"] = runs[-1].get("load_end")
    merged["complete"] = all(run.get("complete", True) for run in runs)
    merged["cells"] = []
    for source, run in enumerate(runs):
        for cell in run["cells"]:
            # "run" keeps the cell's own file and repeat: scaling() pairs cells only inside one run.
            merged["cells"].append(
                {**cell, "repeat": len(merged["cells"]) + 1, "run": f"f{source + 1}r{cell['repeat']}"}
            )
    merged["settings"] = {**first["settings"], "repeats": "merged"}
    merged["summary"] = summarise(merged["cells"])
    return merged
