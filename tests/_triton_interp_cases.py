"""Run the Triton chunk kernels under the interpreter on CPU and print relative errors as JSON.

Run by tests/test_chunked_triton.py in a subprocess with TRITON_INTERPRET=1, which must be set
before triton is imported (triton.jit picks the interpreter at decoration time). Not a test
module itself (no test_ prefix): pytest never imports it into its own process.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from attnbench.impls.chunked_triton import chunked_triton_attention
from attnbench.impls.linear import linear_quadratic

DTYPES = {"float32": torch.float32, "float16": torch.float16}

# (B, H, N, D, M, chunk_size or None for the default); N never a multiple of the chunk, D != M, and
# sequences of many chunks, so the inter-chunk scan (prefix and suffix) carries real states.
SHAPES = [
    (1, 2, 37, 8, 24, 16),
    (2, 1, 100, 32, 16, 32),
    (1, 1, 70, 20, 40, None),
    (1, 1, 5, 16, 16, 16),  # one partial chunk
    (1, 1, 150, 16, 16, 16),  # ten chunks
]
SEEDS = (0, 1)


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).norm() / ref.norm()).item()


def run_case(b, h, n, d, m, chunk, dtype, seed, *, noncontig_q=False, stride0_grad=False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=gen)
    k = torch.randn(b, h, n, d, generator=gen)
    v = torch.randn(b, h, n, m, generator=gen)
    g = torch.randn(b, h, n, m, generator=gen)
    if stride0_grad:  # an expanded gradient, as from out.sum().backward()
        g = torch.randn(1, 1, 1, 1, generator=gen).expand(b, h, n, m)
    ref_in = [x.double().requires_grad_() for x in (q, k, v)]
    ref = linear_quadratic(*ref_in, causal=True)
    ref.backward(g.double())
    xs = [x.to(DTYPES[dtype]).requires_grad_() for x in (q, k, v)]
    q_in = xs[0]
    if noncontig_q:  # same values, transposed storage
        q_in = xs[0].transpose(-1, -2).contiguous().transpose(-1, -2)
    out = chunked_triton_attention(q_in, xs[1], xs[2], chunk_size=chunk)
    out.backward(g.to(DTYPES[dtype]))
    # PyTorch's own error in this dtype (the quadratic form), the yardstick for low precision.
    ys = [x.to(DTYPES[dtype]).requires_grad_() for x in (q, k, v)]
    out_pt = linear_quadratic(*ys, causal=True)
    out_pt.backward(g.to(DTYPES[dtype]))
    torch_err = max([rel(out_pt, ref)] + [rel(y.grad, r.grad) for y, r in zip(ys, ref_in, strict=True)])
    return {
        "torch": torch_err,
        "out": rel(out, ref),
        "dq": rel(xs[0].grad, ref_in[0].grad),
        "dk": rel(xs[1].grad, ref_in[1].grad),
        "dv": rel(xs[2].grad, ref_in[2].grad),
        "finite": bool(all(torch.isfinite(t).all() for t in (out, *[x.grad for x in xs]))),
    }


def zero_dim_errors() -> dict[str, str]:
    """The message for D = 0 and M = 0, raised before any launch."""
    found = {}
    for which, (d, m) in (("D", (0, 4)), ("M", (4, 0))):
        try:
            chunked_triton_attention(torch.randn(1, 1, 8, d), torch.randn(1, 1, 8, d), torch.randn(1, 1, 8, m))
            found[which] = "no error"
        except ValueError as exc:
            found[which] = str(exc)
    return found


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    results: dict = {}
    for dtype in DTYPES:
        for shape in SHAPES:
            for seed in SEEDS:
                cid = f"{dtype}-B{shape[0]}-H{shape[1]}-N{shape[2]}-D{shape[3]}-M{shape[4]}-C{shape[5]}-s{seed}"
                results[cid] = run_case(*shape, dtype, seed)
    results["float32-noncontig-q"] = run_case(1, 2, 45, 16, 24, 16, "float32", 3, noncontig_q=True)
    results["float32-stride0-grad"] = run_case(1, 2, 45, 16, 24, 16, "float32", 4, stride0_grad=True)
    print(json.dumps({"cases": results, "zero_dim": zero_dim_errors()}))


if __name__ == "__main__":
    main()
