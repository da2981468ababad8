"""Shared pieces of the benchmarks: machine description, peak estimate, timing, statistics, data.

Everything here is cheap to import (no TensorFlow): the entry point, the worker processes and the
tests import it first.

Conventions used by every figure
--------------------------------
* A *figure* is a dict with ``description``, ``unit``, ``load_avg`` (``os.getloadavg()`` at its
  start and end, and the 1-minute value before each repetition), ``results`` (one *statistic*
  per measured variant) and, where it applies, ``ratios`` and ``targets``.
* A *statistic* is ``{"median", "min", "max", "q1", "q3", "n", "values"}`` over at least 3
  repetitions (``summarize``).
* Variants that are compared are measured *interleaved* (``interleaved``): repetition 1 of every
  variant, then repetition 2 of every variant, ... so that a change of machine load (the machine
  is shared) hits all of them alike, and ratios are formed per repetition (``paired_ratio``).
* Every rate also comes per CPU-second of the measuring process (``*_per_cpu_s``): the rate
  divided by the CPU time the process got, which moves much less than the wall-clock rate when
  other processes take cores away.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Iterable

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
SCHEMA_VERSION = 1

# FLOPs per cycle per core for float32 by SIMD extension, assuming two FMA pipes per core
# (true of AMD Zen 2/3/4 and Intel Haswell..Sapphire Rapids server parts): vector width in
# float32 lanes x 2 (multiply + add) x 2 pipes. AVX2+FMA: 8 x 2 x 2 = 32; AVX-512: 16 x 2 x 2 = 64
# (one-FMA-pipe AVX-512 parts reach half); AVX without FMA: 8 x 2 (separate mul and add) = 16;
# SSE: 4 x 2 x ... = 8.
FLOPS_PER_CYCLE = (("avx512f", 64), ("fma", 32), ("avx", 16), ("sse2", 8))
# bfloat16 FLOPs per cycle per core, by the unit that computes them: an AMX tile multiply
# (TDPBF16PS: 16 x 16 float32 results from 32 bf16 pairs each, over 16 cycles: 512 multiply-adds a
# cycle = 1024 FLOPs); AVX-512 BF16 (VDPBF16PS: 16 lanes x 2 bf16 pairs x 2 FLOPs x 2 FMA pipes =
# 128). CPUs without either compute bfloat16 by converting to float32: no bfloat16 peak.
BF16_FLOPS_PER_CYCLE = (("amx_bf16", 1024), ("avx512_bf16", 128))


# ----------------------------------------------------------------------------- machine
def cores() -> int:
    """Cores this process may run on (the affinity mask: what a container is given)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _ghz(info: dict) -> tuple[float | None, str]:
    """Nominal clock: cpufreq's maximum when the kernel exposes it, else /proc/cpuinfo's MHz
    (in a VM that is the host's nominal clock; turbo is not counted either way)."""
    max_freq = pathlib.Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return round(int(max_freq.read_text()) / 1e6, 3), str(max_freq)
    except (OSError, ValueError):
        pass
    try:
        return round(float(info["cpu MHz"]) / 1000.0, 3), "/proc/cpuinfo cpu MHz"
    except (KeyError, ValueError):
        return None, "unknown"


def gpu_names() -> list[str]:
    """NVIDIA GPU names from nvidia-smi (no TensorFlow import); [] without GPUs."""
    exe = shutil.which("nvidia-smi")
    if not exe or os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def slugify(text: str) -> str:
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the figures were measured on; ``name`` is the slug used for the results file:
    the GPU name when there is a GPU, else the CPU model and core count."""
    from hcdtf import precision

    info = precision.cpuinfo()  # the package's one /proc/cpuinfo parser (first processor's fields)
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown cpu"
    flags = set(info.get("flags", "").split())
    n = cores()
    ghz, ghz_source = _ghz(info)
    simd, per_cycle = next(((f, c) for f, c in FLOPS_PER_CYCLE if f in flags), ("none", 2))
    gpus = gpu_names()
    if gpus:
        name = slugify(gpus[0]) + (f"-x{len(gpus)}" if len(gpus) > 1 else "")
    else:
        name = slugify(f"{model} {n} cores")
    peak = n * ghz * per_cycle if ghz else None
    bf16_unit, bf16_per_cycle = next(((f, c) for f, c in BF16_FLOPS_PER_CYCLE if f in flags), (None, None))
    peak_bf16 = n * ghz * bf16_per_cycle if ghz and bf16_per_cycle else None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {
        "name": name,
        "cpu_model": model,
        "cores": n,
        "logical_cpus": os.cpu_count(),
        "ghz": ghz,
        "ghz_source": ghz_source,
        "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "f16c",
                                                   "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "avx512_fp16"}),
        "cpu_kind": precision.cpu_kind(),
        "cpu_id": precision.cpu_features()["cpu_id"],  # family/model/stepping: hypervisors mask the name
        "native_bf16": bool(bf16_unit),
        "flops_per_cycle_per_core_fp32": per_cycle,
        "peak_gflops_fp32": round(peak, 1) if peak else None,
        "flops_per_cycle_per_core_bf16": bf16_per_cycle,
        "peak_gflops_bf16": round(peak_bf16, 1) if peak_bf16 else None,
        "peak_assumption": (
            f"cores x GHz x FLOPs/cycle = {n} x {ghz} x {per_cycle} ({simd}: float32 lanes x 2 for the "
            "fused multiply-add x 2 FMA pipes per core; nominal clock, no turbo)"
            + (f"; bfloat16: {n} x {ghz} x {bf16_per_cycle} ({bf16_unit})" if bf16_unit else "; no bfloat16 unit")
        ),
        "gpus": gpus,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("tensorflow", "tensorflow-cpu", "keras", "tensorflow-datasets", "torch")
                     if _version(d)},
    }


# ----------------------------------------------------------------------------- timing
def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def cpu_seconds() -> float:
    """CPU time of this process, all threads, user + system (clock_gettime resolution, unlike
    os.times' 10 ms ticks)."""
    return time.process_time()


def summarize(values: Iterable[float], digits: int = 4) -> dict:
    """Median and spread (min/max and quartiles) of repeated measurements."""
    v = sorted(float(x) for x in values if x is not None and math.isfinite(float(x)))
    if not v:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0, "values": []}
    q1, q3 = (statistics.quantiles(v, n=4, method="inclusive")[i] for i in (0, 2)) if len(v) > 1 else (v[0], v[0])

    def r(x):
        return float(f"{x:.{digits}g}")

    return {"median": r(statistics.median(v)), "min": r(v[0]), "max": r(v[-1]), "q1": r(q1), "q3": r(q3),
            "n": len(v), "values": [r(x) for x in v]}


def paired_ratio(a: list[float], b: list[float]) -> dict:
    """Statistic of a[i] / b[i] over repetitions measured side by side."""
    return summarize(x / y for x, y in zip(a, b) if y)


def rate_ratio(a: "Runs", b: "Runs") -> dict:
    """Paired ratio of two variants' rates, wall clock, with the same ratio per CPU-second nested
    (``per_cpu_s``: less sensitive to other processes taking cores away)."""
    return {**paired_ratio(a.rates, b.rates), "per_cpu_s": paired_ratio(a.cpu_rates, b.cpu_rates)}


def ratio_of_medians(a: list[float], b: list[float]) -> float | None:
    if not a or not b:
        return None
    mb = statistics.median(b)
    return float(f"{statistics.median(a) / mb:.4g}") if mb else None


@dataclasses.dataclass
class Runs:
    """Raw repetitions of one variant: items processed, wall seconds, CPU seconds."""

    items: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    cpu: list = dataclasses.field(default_factory=list)

    def add(self, items: float, seconds: float, cpu: float) -> None:
        self.items.append(items)
        self.seconds.append(seconds)
        self.cpu.append(cpu)

    @property
    def rates(self) -> list[float]:
        return [i / s for i, s in zip(self.items, self.seconds) if s > 0]

    @property
    def cpu_rates(self) -> list[float]:
        return [i / c for i, c in zip(self.items, self.cpu) if c > 0]

    def stats(self, **extra) -> dict:
        out = {**summarize(self.rates), "per_cpu_s": summarize(self.cpu_rates),
               "seconds": summarize(self.seconds), "items_per_rep": summarize(self.items)}
        out.update(extra)
        return out


class LoadLog:
    """Load average at the start and end of a figure and before each repetition."""

    def __init__(self):
        self.start = load_avg()
        self.per_rep_1min: list[float] = []

    def rep(self) -> None:
        la = load_avg()
        if la:
            self.per_rep_1min.append(la[0])

    def to_dict(self) -> dict:
        return {"start": self.start, "end": load_avg(), "per_rep_1min": self.per_rep_1min}


def interleaved(variants: dict[str, Callable[[], float]], reps: int, log: LoadLog | None = None) -> dict[str, Runs]:
    """Runs ``reps`` rounds; each round times every variant once, in turn. A variant is a
    callable doing its work and returning how many items (images, patches) it processed."""
    runs = {name: Runs() for name in variants}
    for _ in range(reps):
        if log:
            log.rep()
        for name, fn in variants.items():
            t, c = time.perf_counter(), cpu_seconds()
            n = fn()
            runs[name].add(n, time.perf_counter() - t, cpu_seconds() - c)
    return runs


def steps_for(step_seconds: float, target_seconds: float, max_steps: int = 20) -> int:
    """Steps per repetition so that one repetition lasts about ``target_seconds``."""
    if step_seconds <= 0:
        return max_steps
    return max(1, min(max_steps, round(target_seconds / step_seconds)))


def target(value: float | None, threshold: float, what: str, higher_is_better: bool = True) -> dict:
    met = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
    return {"value": value, "target": threshold, "direction": ">=" if higher_is_better else "<=", "met": met,
            "what": what}


# ----------------------------------------------------------------------------- data
class Workspace:
    """Generated data for one run: a synthetic sample in the Kaggle layout, built with the
    ``hcd/kaggle`` TFDS builder (80/10/10 split), once, on first use."""

    def __init__(self, root: pathlib.Path, n_examples: int, data_dir: str | None = None, seed: int = 0,
                 log: Callable[[str], None] = print):
        self.root = pathlib.Path(root)
        self.n_examples = n_examples
        self._data_dir = pathlib.Path(data_dir) if data_dir else None
        self.given = data_dir is not None
        self.seed = seed
        self.log = log
        self.setup: dict = {}

    @property
    def data_dir(self) -> pathlib.Path:
        if self._data_dir is None:
            self._build()
        return self._data_dir

    def _build(self) -> None:
        from hcdtf.data import pipeline as data
        from hcdtf import synthetic

        sample = self.root / "sample"
        out = self.root / "tfds"
        t = time.perf_counter()
        if not (sample / "train_labels.csv").is_file():
            self.log(f"generating {self.n_examples} synthetic patches in {sample}")
            synthetic.write_sample(sample, n=self.n_examples, n_test=0, seed=self.seed)
        self.setup["sample_seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        self.log(f"building the hcd/kaggle TFDS data set in {out}")
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        data.build_dataset(str(sample), str(out), "kaggle")
        self.setup["build_seconds"] = round(time.perf_counter() - t, 1)
        self._data_dir = out

    def config(self, *overrides: str):
        from hcdtf.config import load_config

        return load_config([], [f"data.data_dir={self.data_dir}", *overrides])

    def splits(self) -> dict:
        from hcdtf.data import pipeline as data

        cfg = self.config()
        return {s: data.num_examples(cfg.data, s) for s in ("train", "validation", "test")}


# ----------------------------------------------------------------------------- child processes
_SPAWNER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    t = time.perf_counter()
    with open(job["log"], "w") as log:
        p = subprocess.Popen(job["cmd"], stdout=log, stderr=subprocess.STDOUT, env=job["env"], cwd=job["cwd"])
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"returncode": p.returncode, "seconds": time.perf_counter() - t,
                      "maxrss_mb": ru.ru_maxrss / 1024.0, "cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)
"""


class Spawner:
    """Runs commands from a small helper process started before this one imports TensorFlow.

    Linux keeps a process's peak-RSS high-water mark (``ru_maxrss``) across ``fork`` and
    ``execve``: a child started directly from a 3 GB benchmark process reports a peak RSS of at
    least 3 GB, whatever it really used (where VmHWM is missing, the ``peak_rss_mb`` that hcdtf's
    baseline writes comes from ``ru_maxrss``). Children of this small helper report their own peak."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _SPAWNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, cmd: list[str], log: pathlib.Path, env: dict | None = None, cwd: pathlib.Path = REPO) -> dict:
        job = {"cmd": [str(c) for c in cmd], "log": str(log), "env": dict(env or os.environ), "cwd": str(cwd)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the spawner process died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def vm_hwm_mb() -> float:
    """This process's own peak RSS in MB (hcdtf's measure: VmHWM, not inherited from a parent)."""
    from hcdtf import runtime

    return round(runtime.peak_rss_mb(), 1)


# ----------------------------------------------------------------------------- output
# Result files are written with the package's writer (hcdtf.atomic.write_json).
def last_json(text: str):
    """The last JSON object printed in ``text`` (a child's stdout may have log lines first)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    starts = [m.start() for m in re.finditer(r"^\{", text, flags=re.M)]
    for s in reversed(starts):
        try:
            return json.loads(text[s:])
        except ValueError:
            continue
    return None


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def markdown_tables(result: dict) -> str:
    """The figures of a results file as Markdown tables (for benchmarks/README.md)."""
    m = result["machine"]
    lines = [f"Machine `{m['name']}`: {m['cpu_model']}, {m['cores']} cores at {m['ghz']} GHz "
             f"({', '.join(m['simd'])}), peak estimate {m['peak_gflops_fp32']} GFLOP/s float32"
             + (f", {m['peak_gflops_bf16']} GFLOP/s bfloat16" if m.get("peak_gflops_bf16") else "")
             + (f", GPUs: {', '.join(m['gpus'])}" if m.get("gpus") else "") + f"; {result['mode']} run of "
             f"{result['created']}, {result['seconds']:.0f} s.", ""]
    for name, fig in result["figures"].items():
        if "results" not in fig:
            continue
        la = fig["load_avg"]
        lines += [f"**{name}** ({fig.get('unit', '')}; load average 1/5/15 min at start {la['start']}, "
                  f"per repetition {la.get('per_rep_1min')})", "",
                  "| variant | median | min - max | per CPU-second | notes |", "|---|---:|---:|---:|---|"]
        for v, st in fig["results"].items():
            if "median" not in st:
                note = st.get("error") or (st.get("probe") or {}).get("error") or ""
                lines.append(f"| {v} | - | - | - | {note[:120]} |")
                continue
            notes = []
            if st.get("fraction_of_peak") is not None:
                notes.append(f"{_fmt(st['achieved_gflops']['median'])} GFLOP/s = {st['fraction_of_peak']:.1%} of peak, "
                             f"{st['fraction_of_core_peak_per_cpu_s']:.1%} of a core's peak per CPU-second")
            if st.get("first_step_s") is not None:
                notes.append(f"first step {st['first_step_s']} s")
            if isinstance(st.get("peak_rss_mb"), dict):
                notes.append(f"peak RSS {_fmt(st['peak_rss_mb']['median'])} MB")
            cpu = (st.get("per_cpu_s") or {}).get("median")
            lines.append(f"| {v} | {_fmt(st['median'])} | {_fmt(st['min'])} - {_fmt(st['max'])} | {_fmt(cpu)} "
                         f"| {'; '.join(notes)} |")
        if fig.get("ratios"):
            lines += ["", "| ratio | median | min - max | per CPU-second: median (min - max) |",
                      "|---|---:|---:|---:|"]
            for k, r in fig["ratios"].items():
                if isinstance(r, dict):
                    c = r.get("per_cpu_s")
                    cpu = f"{_fmt(c['median'])} ({_fmt(c['min'])} - {_fmt(c['max'])})" if c else ""
                    lines.append(f"| {k} | {_fmt(r['median'])} | {_fmt(r['min'])} - {_fmt(r['max'])} | {cpu} |")
                else:
                    lines.append(f"| {k} | {_fmt(r)} | | |")
        lines.append("")
    if result.get("targets"):
        lines += ["| target | value | threshold | met |", "|---|---:|---:|---|"]
        for k, t in result["targets"].items():
            op = t.get("direction") or ("<=" if ("lt_" in k or "at_most" in k) else ">=")
            lines.append(f"| {k}: {t['what']} | {_fmt(t['value'])} | {op} {_fmt(t['target'])} | {t['met']} |")
    return "\n".join(lines) + "\n"


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
