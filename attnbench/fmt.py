"""One number format for everything attnbench prints or writes: three significant digits, a unit,
and no e-notation for ordinary values.

- times (given in ms, the unit results use): ``ns``, ``µs``, ``ms`` or ``s``, picked so the
  number is in [1, 1000) -- ``fmt_ms(0.000712) == "712 ns"``, ``fmt_ms(1234.5) == "1.23 s"``;
- memory (given in MiB, 2**20 bytes): ``B``, ``KiB``, ``MiB``, ``GiB`` or ``TiB``, steps of 1024;
- rates: SI prefixes k, M, G, T, P (``fmt_si(1.5e12, "FLOP/s") == "1.50 TFLOP/s"``);
- ratios, speedups and percentages: plain numbers (``1.23``, ``1.23×``, ``12.3%``), in
  e-notation only past 1e-4 or 1e6 (not ordinary for these);
- relative errors (``fmt_err``): always e-notation with a short exponent (``1.2e-7``): they
  span ten orders of magnitude and their exponent is what a reader compares;
- counts and sequence lengths: exact integers (``fmt_count(12345) == "12,345"``, ``fmt_int``).

Three significant digits keep trailing zeros (``1.50 ms``), so a column of numbers reads at
one precision. Zero keeps the unit the value was given in (``0 ms``, ``0 MiB``). Missing values (None, NaN, or text that is not a number) format as ``MISSING``.
A number past the largest unit keeps that unit (``fmt_ms(3.6e6) == "3600 s"``).
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"
DIGITS = 3
TIME_UNITS = (("ns", 1e-6), ("µs", 1e-3), ("ms", 1.0), ("s", 1e3))  # unit, size in ms
MEMORY_UNITS = (("B", 2.0**-20), ("KiB", 2.0**-10), ("MiB", 1.0), ("GiB", 2.0**10), ("TiB", 2.0**20))  # in MiB
SI_PREFIXES = (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15))
PLAIN_RANGE = (1e-4, 1e6)  # plain numbers outside this (by magnitude) use e-notation


def number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or not a number (bools are not numbers)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def sig(value: float, digits: int = DIGITS) -> str:
    """``value`` to ``digits`` significant digits in positional notation, trailing zeros kept:
    ``sig(0.0123456) == "0.0123"``, ``sig(1.5) == "1.50"``, ``sig(123456) == "123000"``."""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    exp = math.floor(math.log10(abs(value)))
    rounded = round(value, digits - 1 - exp)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > exp:  # 9.996 -> 10.0: one digit more
        exp += 1
    decimals = max(digits - 1 - exp, 0)
    return f"{round(value, digits - 1 - exp):.{decimals}f}"


def _scaled(value: Any, units: tuple[tuple[str, float], ...], missing: str) -> str:
    v = number(value)
    if v is None:
        return missing
    if v == 0:  # in the unit the value was given in
        return "0 " + next(unit for unit, size in units if size == 1.0)
    if math.isinf(v):
        return f"{sig(v)} {units[-1][0]}"
    name, size = units[0]
    for unit, unit_size in units:  # the largest unit that leaves the (rounded) number >= 1
        if abs(float(sig(v / unit_size))) >= 1:
            name, size = unit, unit_size
    return f"{sig(v / size)} {name}"


def fmt_ms(ms: Any, missing: str = MISSING) -> str:
    """A time given in milliseconds: ``fmt_ms(0.000712) == "712 ns"``, ``fmt_ms(21.54) == "21.5 ms"``."""
    return _scaled(ms, TIME_UNITS, missing)


def fmt_s(seconds: Any, missing: str = MISSING) -> str:
    """A time given in seconds (``fmt_s(92) == "92.0 s"``)."""
    v = number(seconds)
    return missing if v is None else fmt_ms(v * 1e3)


def fmt_mib(mib: Any, missing: str = MISSING) -> str:
    """Memory given in MiB: ``fmt_mib(0.5) == "512 KiB"``, ``fmt_mib(4300) == "4.20 GiB"``."""
    return _scaled(mib, MEMORY_UNITS, missing)


def fmt_bytes(n: Any, missing: str = MISSING) -> str:
    """Memory given in bytes (``fmt_bytes(1536) == "1.50 KiB"``)."""
    v = number(n)
    return missing if v is None else fmt_mib(v / 2**20)


def fmt_si(value: Any, unit: str = "", missing: str = MISSING) -> str:
    """A rate with an SI prefix: ``fmt_si(1.5e12, "FLOP/s") == "1.50 TFLOP/s"``,
    ``fmt_si(123456) == "123k"`` (no unit: the prefix sticks to the number)."""
    v = number(value)
    if v is None:
        return missing
    prefix, size = SI_PREFIXES[0]
    if not math.isinf(v):
        for p, s in SI_PREFIXES:
            if abs(float(sig(v / s))) >= 1:
                prefix, size = p, s
    text = sig(v / size)
    return f"{text} {prefix}{unit}" if unit else f"{text}{prefix}"


def fmt_num(value: Any, missing: str = MISSING) -> str:
    """A plain number (a ratio): ``fmt_num(0.0123) == "0.0123"``; e-notation only outside
    [1e-4, 1e6) in magnitude, where it is not an ordinary value (``fmt_num(2e-7) == "2.00e-7"``)."""
    v = number(value)
    if v is None:
        return missing
    if v != 0 and not math.isinf(v) and not PLAIN_RANGE[0] <= abs(v) < PLAIN_RANGE[1]:
        return _sci(v, DIGITS)
    return sig(v)


def fmt_speedup(value: Any, missing: str = MISSING) -> str:
    """A ratio of times: ``fmt_speedup(2.5) == "2.50×"``."""
    text = fmt_num(value, missing)
    return text if text == missing else text + "×"


def fmt_pct(value: Any, missing: str = MISSING) -> str:
    """A value already in percent: ``fmt_pct(12.34) == "12.3%"``."""
    text = fmt_num(value, missing)
    return text if text == missing else text + "%"


def fmt_err(value: Any, missing: str = MISSING, digits: int = 2) -> str:
    """A relative error, always in e-notation with a short exponent: ``fmt_err(1.234e-7) == "1.2e-7"``."""
    v = number(value)
    if v is None:
        return missing
    return "0" if v == 0 else _sci(v, digits)


def fmt_count(value: Any, missing: str = MISSING) -> str:
    """An exact count with thousands separators: ``fmt_count(12345) == "12,345"``."""
    v = number(value)
    return missing if v is None or math.isinf(v) else f"{round(v):,}"


def fmt_int(value: Any, missing: str = MISSING) -> str:
    """An exact integer without separators (sequence lengths: ``fmt_int(16384.0) == "16384"``)."""
    v = number(value)
    return missing if v is None or math.isinf(v) else str(round(v))


def _sci(v: float, digits: int) -> str:
    if math.isinf(v):
        return sig(v)
    mantissa, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exp)}"
