"""Suites: TOML files describing a sweep, validated against a typed schema
(:mod:`attnbench.suite.schema`) and expanded into points (:mod:`attnbench.suite.expand`).

Every mistake is a UserError naming the file, the key, the value and what was expected.
No torch here: expansion is cheap and runs in the CLI process.
"""

from attnbench.suite.expand import DEFAULTS, expand, parse_set
from attnbench.suite.load import Suite, available_suites, load_suite, parse_suite, suites_dir

__all__ = ["DEFAULTS", "Suite", "available_suites", "expand", "load_suite", "parse_set", "parse_suite", "suites_dir"]
