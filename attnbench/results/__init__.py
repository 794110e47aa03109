"""The run directory and everything in it: layout (:mod:`.layout`), plan (:mod:`.plan`),
journal (:mod:`.journal`), rounds pooling (:mod:`.rounds`), the Parquet tables
(:mod:`.tables`), metadata and its schema versions (:mod:`.metadata`, :mod:`.schema`), and
other tools' formats (:mod:`.pytest_benchmark`, :mod:`.csv_export`).

Importing this package loads pandas and pyarrow: commands import it inside their bodies.
"""

from attnbench.results.layout import JOURNAL, METADATA, PLAN, RESULTS, SAMPLES, STEPS, RunDir
from attnbench.results.metadata import read_metadata, write_metadata
from attnbench.results.schema import COLUMNS, SCHEMA_VERSION, STEP_COLUMNS
from attnbench.results.tables import finalize, load_run, load_steps, records_to_frames, steps_frame

__all__ = [
    "COLUMNS",
    "JOURNAL",
    "METADATA",
    "PLAN",
    "RESULTS",
    "SAMPLES",
    "SCHEMA_VERSION",
    "STEPS",
    "STEP_COLUMNS",
    "RunDir",
    "finalize",
    "load_run",
    "load_steps",
    "read_metadata",
    "records_to_frames",
    "steps_frame",
    "write_metadata",
]
