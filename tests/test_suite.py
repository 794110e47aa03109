"""Suite parsing, validation errors and expansion."""

from __future__ import annotations

import pytest

from attnbench.errors import UserError
from attnbench.suite import available_suites, expand, load_suite, parse_set, parse_suite

GOOD = """
name = "t"
[params]
impl = ["softmax", "linear-chunked"]
N = [128, 4096]
pass = "fwd"
[device.cpu.limits]
softmax = { max_N = 1024 }
[impl_params]
linear-chunked = { chunk_size = 32 }
[timing]
max_time_s = 0.5
"""


def test_shipped_suites_parse():
    names = available_suites()
    assert {"seqlen", "smoke"} <= set(names)
    for name in names:
        load_suite(name)


def test_seqlen_covers_256_to_16384_on_cpu_for_linear_impls():
    pts = expand(load_suite("seqlen"), "cpu")
    ns = {p.N for p in pts if p.impl == "linear-chunked" and not p.skip}
    assert min(ns) == 256 and max(ns) == 16384


def test_expand_limits_become_skip_reasons():
    pts = expand(parse_suite(GOOD, "t.toml"), "cpu")
    assert len(pts) == 4
    skipped = [p for p in pts if p.skip]
    assert [p.point_id for p in skipped] == ["softmax/fwd/causal/float32/B1-H4-N4096-D64-M64"]
    assert "max_N=1024" in skipped[0].skip
    chunked = [p for p in pts if p.impl == "linear-chunked"]
    assert chunked[0].params == {"chunk_size": 32}
    assert chunked[0].point_id.endswith("-chunk_size32")


def test_overrides_replace_axes():
    pts = expand(parse_suite(GOOD, "t.toml"), "cpu", {"N": [64], "impl": ["softmax"]})
    assert [p.N for p in pts] == [64]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[params]\nimpl='softmax'\nN='abc'", "N = 'abc': expected an integer >= 1"),
        ("[params]\nimpl='softmax'\nN=[16]\ndtype='float8'", "dtype = 'float8': expected one of"),
        ("[params]\nimpl='softmax'\nN=[16]\ncolour=1", "unknown parameter 'colour'"),
        ("[params]\nimpl='softmax'", "N is missing"),
        ("bogus = 1\n[params]\nimpl='softmax'\nN=1", "unknown key 'bogus'"),
        ("[params\nimpl=", "not valid TOML"),
        ("[params]\nimpl='x'\nN=1\n[timing]\nmax_time_s=-1", "max_time_s = -1: expected a positive number"),
        ("[params]\nimpl='x'\nN=1\n[device.tpu]\n", "unknown device 'tpu'"),
    ],
)
def test_malformed_suites_name_the_problem(text, needle):
    with pytest.raises(UserError) as info:
        parse_suite(text, "bad.toml")
    msg = str(info.value)
    assert needle in msg and "bad.toml" in msg and "\n" not in msg


def test_parse_set():
    assert parse_set("N=1024,2048") == ("N", [1024, 2048])
    assert parse_set("causal=false") == ("causal", [False])
    with pytest.raises(UserError, match="N expects integers, got 'abc'"):
        parse_set("N=abc")
    with pytest.raises(UserError, match="unknown parameter 'Q'"):
        parse_set("Q=1")
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_set("N")


def test_unknown_suite_lists_available():
    with pytest.raises(UserError, match="unknown suite 'nope'; available: .*seqlen"):
        load_suite("nope")
