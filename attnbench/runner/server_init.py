"""Imported first by the fork server (``procs.PRELOAD``) and by nothing else: ties the server's
life to the main process that started it (see :mod:`attnbench.runner.lifeline`), before the
slow torch import of the worker module."""

from attnbench.runner.lifeline import die_with_parent

die_with_parent()
