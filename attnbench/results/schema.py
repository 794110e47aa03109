"""The results schema: every column of ``results.parquet`` and ``steps.parquet`` with its unit
and meaning (docs/results.md is generated from these), and the schema version.

Version history (``metadata.json`` ``schema_version``; :mod:`attnbench.results.metadata`
migrates older runs on read):

1. the first landing.
2. metadata gains ``run_id``, ``options`` (every option of the run, reused by ``--resume``)
   and ``commands`` (the original command line and each resume's); ``correct`` may be null
   (the check could not run: ``correctness_error`` says why; never a failed check).
"""

from __future__ import annotations

SCHEMA_VERSION = 2

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
    "converged": (
        "bool",
        "the noise target was met before the time cap (pooled rounds: by every round, or by the pooled samples)",
    ),
    "calls_per_sample": ("", "calls timed together in one sample"),
    "warmup_calls": ("", "untimed calls before sampling"),
    "timer": ("", "cpu-perf-counter or cuda-event"),
    "single_call": (
        "bool",
        "the first call took [timing] single_call_s or longer: that one call is the sample, the peak memory "
        "(mem_method rss-hwm-single-call) and, for fwdbwd, the output checked",
    ),
    "threads": ("", "torch intra-op threads"),
    "input_mib": ("MiB", "memory of q, k, v and the upstream gradient"),
    "peak_mib": ("MiB", "peak memory of one call beyond what existed before it (inputs excluded)"),
    "mem_method": (
        "",
        "how peak_mib was measured: rss-hwm, rss-hwm-single-call or torch-allocator on CPU, cuda-allocator on GPU",
    ),
    "reference": ("", "what the float64 reference was (the family reference, or its chunked form past N=4096)"),
    "checked_by": ("", "the point whose run produced this verdict (passes of one impl on the same inputs share it)"),
    "err_out": ("ratio", "||out - ref|| / ||ref|| against the float64 reference"),
    "err_dq": ("ratio", "relative error of dL/dq"),
    "err_dk": ("ratio", "relative error of dL/dk"),
    "err_dv": ("ratio", "relative error of dL/dv"),
    "tolerance": ("ratio", "largest relative error that passes, by dtype"),
    "correct": (
        "bool",
        "every checked tensor finite, non-constant and within tolerance; null when the check could not run",
    ),
    "correctness_error": ("", "what failed the check"),
    "server_pid": ("", "pid of the fork server the worker came from (a fresh one per round)"),
    "rounds": ("", "worker processes that measured the point; their samples are pooled"),
    "round_medians_ms": ("ms", "median of each round, when rounds > 1"),
    "wall_s": ("s", "wall time the point took, worker start to result"),
    # where the point ran (attnbench.runner.executors): one run may span GPUs, hosts and Slurm jobs
    "host": ("", "host name of the machine that measured the point"),
    "device_model": ("", "GPU model (CUDA device name) or, on the CPU, the CPU model; never pooled across models"),
    "device_uuid": (
        "",
        "CUDA: the GPU the worker ran on (GPU-/MIG-<uuid>; with --gpus and rounds > 1, round 0's); null on CPU",
    ),
    "shard": ("", "Slurm: the shard (submission-index) whose journal holds the point; null for local runs"),
    "slurm_job_id": ("", "Slurm: the job (array task) that ran the shard; null for local runs"),
    # the gate's machine reference and fault state (attnbench.measure.reference), CPU only
    "ref_ms": (
        "ms",
        "machine reference: a fixed 192x192 matmul + 4 MiB copy (torch, not the impl) timed with the point's "
        "clock in its worker, before and after the point (median over rounds when rounds > 1)",
    ),
    "ref_mm_ms": ("ms", "the reference's matmul part (the first round's, when rounds > 1)"),
    "ref_copy_ms": ("ms", "the reference's copy part (the first round's, when rounds > 1)"),
    "ref_fault_us": ("us", "cost of one minor page fault in the worker: fresh pages written once (median over rounds)"),
    "faults_per_call": (
        "",
        "minor page faults per call of the pass in its steady state (memory the allocator hands back and "
        "faults in again at every call: a slow process state); median over rounds",
    ),
    "round_ref_ms": ("ms", "ref_ms of each round, in round order, when rounds > 1"),
    "round_faults_per_call": ("", "faults_per_call of each round, in round order, when rounds > 1"),
    "round_ref_fault_us": ("us", "ref_fault_us of each round, in round order, when rounds > 1"),
    # CUDA timer (attnbench.measure.cuda_timer) and memory (attnbench.measure.cuda_memory)
    "host_overhead_ms": ("ms", "CUDA: median host time to enqueue one call (Python dispatch, autograd, launches)"),
    "launch_bound": ("bool", "CUDA: enqueuing a call takes at least 90 % of its device time (the host sets the pace)"),
    "l2_flush_mib": (
        "MiB",
        "CUDA: L2 flush written before each sample (2x the L2 size, at least 256 MiB; 0 = no flush)",
    ),
    "cuda_graph": ("bool", "CUDA: timed as CUDA-graph replays"),
    "peak_reserved_mib": ("MiB", "CUDA: allocator pool at its largest during the call (max_memory_reserved)"),
    "nvml_process_mib": ("MiB", "CUDA: device memory NVML attributes to the worker process after the call"),
    # NVML telemetry while the point was timed (attnbench.measure.telemetry); None without NVML
    "power_w_mean": ("W", "mean board power over the energy block: its energy / its wall time"),
    "energy_j_per_call": ("J", "energy counter increase over the energy block (calls back to back) / its calls"),
    "power_method": ("", "energy-counter, power-readings (no counter) or context-window (no timed window)"),
    "energy_block_s": ("s", "wall time of the energy block"),
    "energy_block_calls": ("", "calls made in the energy block"),
    "telemetry_window_s": ("s", "length of the timed window the readings come from (warm-up excluded)"),
    "telemetry_window_short": ("bool", "a window under NVML's ~1 s averaging: power/utilisation lag the point"),
    "telemetry_scope": ("", "gpu, or whole gpu (MIG parent) when the device is a MIG instance"),
    "sm_clock_mhz_min": ("MHz", "lowest SM clock sampled"),
    "sm_clock_mhz_mean": ("MHz", "mean SM clock sampled"),
    "temp_c_max": ("C", "highest GPU temperature sampled"),
    "gpu_util_pct_mean": ("%", "mean GPU utilisation sampled"),
    "throttle_reasons": ("", "clock event reasons seen (comma-separated; gpu_idle etc. included)"),
    "throttled": ("bool", "a throttling reason (power cap, thermal, sync boost, ...) was seen while timing"),
    "telemetry_samples": ("", "NVML readings taken while timing (about every 10 ms)"),
    # CPU telemetry while the point was timed (attnbench.measure.cpu_telemetry); None off Linux
    "cpu_other_busy_pct": (
        "%",
        "CPU time other processes used while timing, % of all CPUs' time (/proc/stat busy minus the worker's own; "
        "report.frame.noisy flags > 10)",
    ),
    "cpu_self_busy_pct": ("%", "the worker's own CPU time while timing, % of all CPUs' time"),
    "cpu_steal_pct": (
        "%",
        "time the hypervisor gave to other virtual machines while timing (steal), % of all CPUs' time",
    ),
    "load_avg_1m": ("", "1-minute load average at the end of the timing window (counts the worker's own threads)"),
    "cpu_mhz_mean": (
        "MHz",
        "mean CPU clock over all CPUs at both ends of the timing window (cpufreq, else /proc/cpuinfo)",
    ),
    "cpu_mhz_min": ("MHz", "lowest CPU clock read at either end of the timing window"),
    "cpu_window_s": ("s", "wall time of the timing window the CPU telemetry covers (warm-up and samples)"),
    # roofline (attnbench.measure.roofline), against the run's calibrated peaks (metadata "peaks")
    "model_flops": ("FLOP", "modelled FLOPs of one call (family, pass, shape, causal)"),
    "model_bytes": ("B", "modelled minimal bytes read + written by one call"),
    "arith_intensity": ("FLOP/B", "model_flops / model_bytes"),
    "tflops": ("TFLOP/s", "model_flops / time_ms_median, 1e12 FLOP/s"),
    "gbps": ("GB/s", "model_bytes / time_ms_median, 1e9 B/s"),
    "pct_peak_flops": ("%", "tflops as a percentage of the calibrated matmul rate of the math mode in peak_math"),
    "peak_math": ("", "the math mode whose calibrated peak judged the point: fp32, tf32, fp16, bf16, fp64"),
    "pct_peak_note": ("", "why pct_peak_flops exceeds 100 %, when it does"),
    "pct_peak_bw": ("%", "gbps as a percentage of the calibrated copy bandwidth"),
    "bound": ("", "compute or memory: arith_intensity against the ridge point peak_flops / peak_bw"),
    # pass decode only (attnbench/measure/passes/decode.py): N = P + T; time_ms_* are over per-step times.
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
