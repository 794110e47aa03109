"""Comparing two runs for CI gating: statistics, thresholds, verdicts, baselines, export.

See docs/ci.md for the rule, the threshold syntax and the exit codes.
"""
