"""`attnbench doctor`: checks, on the user's machine, that attnbench's numbers agree with
independent tools, and says what to fix when they do not.

One module per group of checks: :mod:`.timers` (attnbench's timers against torch.utils.benchmark
and triton's do_bench), :mod:`.launch` (launch overhead, launch-bound points of a suite),
:mod:`.gpu` (clocks, power, persistence, ECC, MIG, other processes, via NVML), :mod:`.energy`
(the NVML energy counter against power x time), :mod:`.kernels` (every available impl against
the float64 oracle). :mod:`.machine` watches the host's load while timing, :mod:`.result` holds
the record every check returns, :mod:`.run` runs the groups for a device and :mod:`.render`
prints them or writes the JSON bundle.
"""
