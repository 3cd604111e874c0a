"""The machine description, the Markdown table (``results.md``) and ``results.json``."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .cases import size_label

COLUMNS = ("loss", "backend", "mode", "size", "pass", "unilosses ms", "peer", "peer ms",
           "ratio", "floor multiple", "peak extra MB")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    affinity = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "affinity_cpus": affinity,
            "memory_gib": _mem_total_gib(), "platform": platform.platform(),
            "python": sys.version.split()[0], "loadavg_start": load}


# -- formatting ----------------------------------------------------------------------------------
def fmt_ms(x: float | None) -> str:
    if x is None:
        return "error"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_multiple(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_mb(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _pair(a: str, b: str | None) -> str:
    return a if b is None else f"{a} / {b}"


def size_cell(g: dict[str, Any]) -> str:
    shape = g["shape"]
    if len(shape) <= 1 or "x".join(map(str, shape)) == g["size"]:
        return g["size"]
    return f"{g['size']} ({'×'.join(map(str, shape))})"


def rows(result: dict[str, Any]) -> list[list[str]]:
    out = []
    for job in result["jobs"]:
        for g in job["groups"]:
            u = g["results"]["unilosses"]
            head = [g["loss"], g["backend"], g["mode"], size_cell(g), g["pass"],
                    fmt_ms(u["median_ms"])]
            peers = g["peers"] or [None]
            timed = [(g["results"][n]["median_ms"], n) for n in g["peers"]
                     if g["results"][n]["median_ms"] is not None]
            best = min(timed)[1] if len(timed) > 1 else None
            for name in peers:
                if name is None:
                    out.append(head + ["–", "–", "–", fmt_multiple(u["floor_multiple"]),
                                       fmt_mb(u["peak_extra_mb"])])
                    continue
                p = g["results"][name]
                agree = g["agreement"].get(name)
                label = name if agree is None or agree.get("ok") else f"{name} (≠!)"
                if name == best:
                    label += " (best)"
                ratio = ("–" if u["median_ms"] is None or p["median_ms"] is None
                         else f"{u['median_ms'] / p['median_ms']:.2f}")
                out.append(head + [
                    label, fmt_ms(p["median_ms"]), ratio,
                    _pair(fmt_multiple(u["floor_multiple"]), fmt_multiple(p["floor_multiple"])),
                    _pair(fmt_mb(u["peak_extra_mb"]), fmt_mb(p["peak_extra_mb"])),
                ])
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(result)]
    return "\n".join(lines)


def _settings_by_backend(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for job in result["jobs"]:
        if job.get("settings") and job["backend"] not in out:
            out[job["backend"]] = job["settings"]
    return out


def bw_device(result: dict[str, Any]) -> str | None:
    """The GPU's name where the run was on one (None on the CPU)."""
    return result["bandwidth"].get("device")


def bandwidth_line(result: dict[str, Any]) -> str:
    bw = result["bandwidth"]
    if bw.get("device"):
        return (f"- device: {result['config'].get('device')} ({bw['device']}); memory bandwidth "
                f"(the floor's): {bw['gbs']:.0f} GB/s ({bw['method']} of "
                f"{bw['bytes'] / 1e6:.0f} MB, best of {bw['repeats']}); a sample's calls run "
                f"back to back with one synchronisation at its end")
    multi = (f", {bw['threads']} threads {bw['multi_gbs']:.1f} GB/s" if bw.get("multi_gbs")
             else "")
    return (f"- memory bandwidth: {bw['gbs']:.1f} GB/s (np.copyto of {bw['bytes'] / 1e6:.0f} "
            f"MB, read + write, best of {bw['repeats']}: 1 thread {bw['single_gbs']:.1f} "
            f"GB/s{multi})")


def header(result: dict[str, Any]) -> list[str]:
    m, v, c = result["machine"], result["versions"], result["config"]
    mem = f", {m['memory_gib']:.0f} GiB RAM" if m.get("memory_gib") else ""
    vers = ", ".join(f"{k} {val}" for k, val in v.items())
    threads = []
    for backend, s in _settings_by_backend(result).items():
        keys = [k for k in s if k.startswith(("torch.", "tf.", "jax_", "XLA"))]
        if keys:
            threads.append(f"{backend}: " + ", ".join(f"{k}={s[k]!r}" for k in keys))
    env = ", ".join(f"{k}={val}" for k, val in result["environment"].items())
    malloc = result["malloc_main"]
    malloc_txt = malloc["setting"] + (" (" + ", ".join(f"{k}={val}" for k, val in malloc.items()
                                                    if k != "setting") + ")"
                                      if len(malloc) > 1 else "")
    compilers = "; ".join(f"{b}: {txt}" for b, txt in result["compilers"].items())
    isolated = (f"sizes of {size_label(c['isolate_min'])} elements and more, and explicit "
                f"shapes, run in a fresh process per backend and size" if c["isolate"]
                else "all sizes in one process")
    load = ""
    if m.get("loadavg_start"):
        load = (f"; load average {m['loadavg_start'][0]:.1f} at the start, "
                f"{(m.get('loadavg_end') or [float('nan')])[0]:.1f} at the end")
    return [
        "# unilosses benchmark",
        "",
        f"- run: {result['started']}, `python -m benchmarks {' '.join(result['argv'])}`, "
        f"{result['duration_s']:.0f} s",
        f"- machine: {m['cpu']}, {m['affinity_cpus']} of {m['logical_cpus']} logical CPUs "
        f"available{mem}; {m['platform']}; Python {m['python']}{load}",
        f"- versions: {vers}",
        f"- threads: requested {c['threads']}; {'; '.join(threads) or '–'}; environment: "
        f"{env or '–'}",
        f"- malloc: {malloc_txt}; unilosses value checks: {'on' if c['checks'] else 'off'}",
        bandwidth_line(result),
        f"- timing: median of {c['repeats']} interleaved rounds after {c['warmup']} warm-up "
        f"calls (and the first, compiling, call); a sample is at least "
        f"{c['min_time'] * 1e3:g} ms of back-to-back calls; {isolated}",
        f"- compiled: {compilers or '–'}",
        "- ratio = unilosses ms / peer ms (below 1: unilosses is faster); floor multiple = "
        "ms / (bytes read and written / bandwidth), unilosses / peer; peak extra MB = "
        + ("torch's allocator peak (max_memory_allocated) during one call above what was "
           "allocated before it (jax: not measured)" if bw_device(result) else
           "resident high-water mark of one call above the resident size before it")
        + ", unilosses / peer (includes the gradient; measured from "
        f"{size_label(c.get('memory_min', 0))} elements on)"
        + ("" if result["memory_measured"] else " (not measured)"),
        "- (best): the fastest of several peers; (≠!): the peer disagreed with unilosses on "
        "these inputs (see Notes)",
    ]


def notes(result: dict[str, Any]) -> list[str]:
    out: list[str] = []
    details: dict[str, str] = {}
    for job in result["jobs"]:
        where = f"{job['backend']} {job['size']}"
        if job.get("error"):
            out.append(f"- {where}: job failed: {job['error']}")
        for s in job.get("skipped", []):
            line = f"- {job['backend']}: skipped {s}"
            if line not in out:
                out.append(line)
        for g in job["groups"]:
            key = f"{g['loss']} {g['backend']} {g['mode']} {g['size']} {g['pass']}"
            for name, r in g["results"].items():
                if r["error"]:
                    out.append(f"- {key}: {name} failed: {r['error']}")
            for name, a in g["agreement"].items():
                if not a.get("ok"):
                    out.append(f"- {key}: {name} disagrees with unilosses: {a}")
            for name, d in g.get("peer_details", {}).items():
                details.setdefault(f"{g['backend']}: {name}", d)
    out += [f"- peer {k}: {d}" for k, d in sorted(details.items())]
    if result.get("interrupted"):
        out.insert(0, "- the run was cut short (--time-limit or an interrupt): the jobs after "
                      "the last row did not run")
    return (["", "## Notes", ""] + out) if out else []


def markdown(result: dict[str, Any]) -> str:
    return "\n".join(header(result) + ["", table(result)] + notes(result)) + "\n"


def write(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "results.md", out / "results.json"
    md.write_text(markdown(result))
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return md, js


__all__ = ["COLUMNS", "machine", "markdown", "rows", "table", "write"]
