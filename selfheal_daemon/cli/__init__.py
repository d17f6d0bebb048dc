"""The ``selfheal`` command line: the typer app, what the operator commands print, ``once``."""
