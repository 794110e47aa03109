"""Running points: one worker process per point, a journal, resume, timeouts."""
