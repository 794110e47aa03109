"""CLI commands, one module each. They import only typer and the standard library at module
level; torch, pandas and the rest are imported inside the command bodies."""
