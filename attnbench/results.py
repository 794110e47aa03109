"""Results of a run: a tidy table (one row per point), the raw samples (a long table), and a
versioned metadata sidecar. Reports and comparisons read runs only through this module.

Run directory layout::

    journal.jsonl      every finished point, appended as it finishes (the source of truth)
    results.parquet    one row per point (columns documented in COLUMNS)
    samples.parquet    point_id, sample, time_ms, round: every timing sample, per call, and the
                       round (worker process) that took it
    steps.parquet      decode points only: one row per sampled step (columns in STEP_COLUMNS)
    metadata.json      schema_version, environment, suite, command line, timestamps
    plan.json          the points of the run, so --resume knows what is missing
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.runner import journal

SCHEMA_VERSION = 1
RESULTS = "results.parquet"
SAMPLES = "samples.parquet"
STEPS = "steps.parquet"
METADATA = "metadata.json"
PLAN = "plan.json"

# column -> (unit, meaning).
COLUMNS: dict[str, tuple[str, str]] = {
    "point_id": ("", "stable identity of the point: impl/pass/mode/dtype/shape[-params][-seed]"),
    "impl": ("", "implementation name"),
    "family": ("", "softmax or linear"),
    "pass": ("", "fwd (no_grad forward), bwd (backward only, through a retained graph), fwdbwd"),
    "causal": ("bool", "causal mask"),
    "dtype": ("", "input and compute dtype"),
    "B": ("", "batch"),
    "H": ("", "heads"),
    "N": ("tokens", "sequence length"),
    "D": ("", "query/key head dim"),
    "M": ("", "value head dim"),
    "seed": ("", "input seed"),
    "device": ("", "cpu or cuda"),
    "impl_params": ("json", "keyword parameters passed to the impl (e.g. chunk_size)"),
    "status": ("", "ok, skipped, error, oom, timeout or crashed"),
    "error": ("", "why a point was skipped or failed (one line)"),
    "time_ms_median": ("ms", "median time per call"),
    "time_ms_q1": ("ms", "25th percentile of the per-call samples"),
    "time_ms_q3": ("ms", "75th percentile"),
    "time_ms_iqr": ("ms", "q3 - q1"),
    "time_ms_min": ("ms", "fastest sample"),
    "time_ms_max": ("ms", "slowest sample"),
    "time_ms_mean": ("ms", "mean of the samples"),
    "n_samples": ("", "number of timing samples (each a block of calls_per_sample calls)"),
    "rel_noise": ("ratio", "relative standard error of the median, sqrt(pi/2)*(IQR/1.349)/sqrt(n)/median"),
    "converged": ("bool", "the noise target was met before the time cap"),
    "calls_per_sample": ("", "calls timed together in one sample"),
    "warmup_calls": ("", "untimed calls before sampling"),
    "timer": ("", "cpu-perf-counter or cuda-event"),
    "threads": ("", "torch intra-op threads"),
    "input_mib": ("MiB", "memory of q, k, v and the upstream gradient"),
    "peak_mib": ("MiB", "peak memory of one call beyond what existed before it (inputs excluded)"),
    "mem_method": ("", "how peak_mib was measured: rss-hwm or torch-allocator on CPU, cuda-allocator on GPU"),
    "reference": ("", "what the float64 reference was (the family reference, or its chunked form past N=4096)"),
    "checked_by": ("", "the point whose run produced this verdict (passes of one impl on the same inputs share it)"),
    "err_out": ("ratio", "||out - ref|| / ||ref|| against the float64 reference"),
    "err_dq": ("ratio", "relative error of dL/dq"),
    "err_dk": ("ratio", "relative error of dL/dk"),
    "err_dv": ("ratio", "relative error of dL/dv"),
    "tolerance": ("ratio", "largest relative error that passes, by dtype"),
    "correct": ("bool", "every checked tensor finite, non-constant and within tolerance"),
    "correctness_error": ("", "what failed the check"),
    "server_pid": ("", "pid of the fork server the worker came from (a fresh one per round)"),
    "rounds": ("", "worker processes that measured the point; their samples are pooled"),
    "round_medians_ms": ("ms", "median of each round, when rounds > 1"),
    "wall_s": ("s", "wall time the point took, worker start to result"),
    # CUDA timer (attnbench.measure.cuda_timer) and memory (attnbench.measure.cuda_memory)
    "host_overhead_ms": ("ms", "CUDA: median per-call host wall time minus device (event) time"),
    "l2_flush_mib": ("MiB", "CUDA: L2 flush buffer written before each sample (the device's L2 size; 0 = no flush)"),
    "cuda_graph": ("bool", "CUDA: timed as CUDA-graph replays"),
    "peak_reserved_mib": ("MiB", "CUDA: allocator pool at its largest during the call (max_memory_reserved)"),
    "nvml_process_mib": ("MiB", "CUDA: device memory NVML attributes to the worker process after the call"),
    # NVML telemetry while the point was timed (attnbench.measure.telemetry); None without NVML
    "power_w_mean": ("W", "mean board power over the timing window"),
    "energy_j_per_call": ("J", "energy counter increase over the window / calls made in it (warm-up included)"),
    "sm_clock_mhz_min": ("MHz", "lowest SM clock sampled"),
    "sm_clock_mhz_mean": ("MHz", "mean SM clock sampled"),
    "temp_c_max": ("C", "highest GPU temperature sampled"),
    "gpu_util_pct_mean": ("%", "mean GPU utilisation sampled"),
    "throttle_reasons": ("", "clock event reasons seen (comma-separated; gpu_idle etc. included)"),
    "throttled": ("bool", "a throttling reason (power cap, thermal, sync boost, ...) was seen while timing"),
    "telemetry_samples": ("", "NVML readings taken while timing (about every 10 ms)"),
    # roofline (attnbench.measure.roofline), against the run's calibrated peaks (metadata "peaks")
    "model_flops": ("FLOP", "modelled FLOPs of one call (family, pass, shape, causal)"),
    "model_bytes": ("B", "modelled minimal bytes read + written by one call"),
    "arith_intensity": ("FLOP/B", "model_flops / model_bytes"),
    "tflops": ("TFLOP/s", "model_flops / time_ms_median, 1e12 FLOP/s"),
    "gbps": ("GB/s", "model_bytes / time_ms_median, 1e9 B/s"),
    "pct_peak_flops": ("%", "tflops as a percentage of the calibrated matmul rate at this dtype"),
    "pct_peak_bw": ("%", "gbps as a percentage of the calibrated copy bandwidth"),
    "bound": ("", "compute or memory: arith_intensity against the ridge point peak_flops / peak_bw"),
    # pass decode only (attnbench/decode): N = P + T; time_ms_* are over per-step times.
    "P": ("tokens", "decode: prompt length (prefilled at once)"),
    "T": ("tokens", "decode: tokens generated one at a time after the prompt"),
    "decoder": ("", "decode: kv-cache, recurrent-state or recompute (no cache)"),
    "tokens_per_s": ("1/s", "decode: T / total time of the T steps (prefill excluded)"),
    "tokens_per_s_method": (
        "",
        "measured (every step run and timed) or interpolated (recompute: from the sampled steps)",
    ),
    "prefill_ms": ("ms", "decode: time of the prompt's prefill (one call)"),
    "step_ms_first": ("ms", "decode: median time of step 1"),
    "step_ms_last": ("ms", "decode: median time of step T"),
    "state_mib_first": ("MiB", "decode: bytes of the cache/state held after step 1"),
    "state_mib_last": ("MiB", "decode: bytes of the cache/state held after step T"),
    "steps_sampled": ("", "decode: steps timed with repeats and checked (rows in steps.parquet)"),
    "step_repeats": (
        "",
        "decode: least timed repeats of a sampled step (min_samples; more until min_time_s, 3 past max_time_s)",
    ),
}

# steps.parquet: one row per sampled step of a decode point.
STEP_COLUMNS: dict[str, tuple[str, str]] = {
    "point_id": ("", "the decode point"),
    "step": ("", "1-based index of the generated token"),
    "context": ("tokens", "tokens attended by this step (P + step)"),
    "time_ms": ("ms", "median over the repeats of this step, each from the same state"),
    "time_ms_min": ("ms", "fastest repeat"),
    "repeats": ("", "timed repeats"),
    "state_mib": ("MiB", "bytes of the cache/state content after the step"),
    "state_alloc_mib": ("MiB", "bytes allocated for it (the KV cache's capacity doubles)"),
    "err_out": ("ratio", "relative error of this step's output row against the float64 reference"),
}


def records_to_frames(records: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(results DataFrame, samples DataFrame) from journal records (rounds pooled)."""
    import pandas as pd

    from attnbench.runner.rounds import pool

    records = pool(records)
    rows = [{k: v for k, v in rec["row"].items() if k != "traceback"} for rec in records]
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    front = [c for c in COLUMNS if c in df.columns]
    df = df[front + [c for c in df.columns if c not in COLUMNS]]
    samples = pd.DataFrame(
        [
            {"point_id": rec["row"]["point_id"], "sample": i, "time_ms": t, "round": rnd}
            for rec in records
            for i, (t, rnd) in enumerate(
                zip(rec.get("samples", []), rec.get("sample_rounds") or [0] * len(rec.get("samples", [])), strict=True)
            )
        ],
        columns=["point_id", "sample", "time_ms", "round"],
    )
    return df, samples


def steps_frame(records: list[dict[str, Any]]) -> Any:
    """The steps table (STEP_COLUMNS) of the decode records among ``records``."""
    import pandas as pd

    rows = [{"point_id": rec["row"]["point_id"], **st} for rec in records for st in rec.get("steps", [])]
    return pd.DataFrame(rows, columns=list(STEP_COLUMNS)) if not rows else pd.DataFrame(rows)[list(STEP_COLUMNS)]


def load_steps(run_dir: Path) -> Any:
    """steps.parquet of a run (rebuilt from the journal if missing); empty without decode points."""
    import pandas as pd

    path = Path(run_dir) / STEPS
    return pd.read_parquet(path) if path.exists() else steps_frame(journal.load(Path(run_dir)))


def write_metadata(run_dir: Path, meta: dict[str, Any]) -> None:
    meta = {"schema_version": SCHEMA_VERSION, **meta}
    tmp = Path(run_dir) / (METADATA + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(Path(run_dir) / METADATA)


def read_metadata(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / METADATA
    if not path.exists():
        raise UserError(f"run directory {run_dir}: no {METADATA}; expected a directory written by `attnbench run`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema_version {version!r} is not one this attnbench reads (expected {SCHEMA_VERSION})"
        )
    return meta


def finalize(run_dir: Path) -> tuple[Any, Any]:
    """Write results.parquet, samples.parquet and steps.parquet from the journal; return the
    results and samples frames (the steps table: :func:`load_steps`)."""
    records = journal.load(run_dir)
    df, samples = records_to_frames(records)
    df.to_parquet(Path(run_dir) / RESULTS, index=False)
    samples.to_parquet(Path(run_dir) / SAMPLES, index=False)
    steps_frame(records).to_parquet(Path(run_dir) / STEPS, index=False)
    return df, samples


def load_run(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(results, samples, metadata) of a run directory; rebuilt from the journal if the
    Parquet files are missing (a run that was killed before it could write them)."""
    import pandas as pd

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    meta = read_metadata(run_dir)
    if (run_dir / RESULTS).exists():
        df = pd.read_parquet(run_dir / RESULTS)
        samples = pd.read_parquet(run_dir / SAMPLES) if (run_dir / SAMPLES).exists() else None
    else:
        df, samples = records_to_frames(journal.load(run_dir))
    return df, samples, meta
