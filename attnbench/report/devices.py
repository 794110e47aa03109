"""One report, one device model: a run whose points were measured on different GPU (or CPU)
models (Slurm shards on a mixed partition) is not pooled into one set of charts unless asked.

The model of a point is its ``device_model`` column (attnbench.results.schema); points without
one (skipped points, runs written before the column existed) belong to every group.
"""

from __future__ import annotations

from typing import Any

from attnbench.errors import UserError


def device_models(df: Any) -> dict[str, int]:
    """Points per device model, most points first (rows without a model are not counted)."""
    if "device_model" not in df.columns:
        return {}
    counts = df["device_model"].dropna().astype(str).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def select_device(df: Any, device_model: str | None, allow_mixed: bool, where: str) -> Any:
    """``df`` restricted to ``device_model`` (with the rows that have none), or whole when it
    holds one model or ``allow_mixed``; a one-line UserError for a mixed run otherwise."""
    models = device_models(df)
    if device_model is not None:
        if device_model not in models:
            have = ", ".join(repr(m) for m in models) or "none recorded"
            raise UserError(f"--device-model {device_model!r}: no point of {where} ran on it; it has {have}")
        return df[(df["device_model"] == device_model) | df["device_model"].isna()]
    if len(models) > 1 and not allow_mixed:
        listed = "; ".join(f"{m!r}: {n} points" for m, n in models.items())
        raise UserError(
            f"{where} holds points measured on {len(models)} device models ({listed}); one report would pool "
            f"them: give --device-model MODEL for one model's report, or --allow-mixed-devices"
        )
    return df
