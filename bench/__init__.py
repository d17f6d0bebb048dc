"""The benchmarks (docs/BENCHMARKS.md): each script here is a module of this package, run from the
repository root as ``python3 -m bench.<name>`` (``make bench``, ``make bench-recovery``, ...).

``-m`` from the root puts the root on ``sys.path``: the scripts import each other as ``bench.*``
and the project as ``selfheal_daemon`` and ``service``, on the bare interpreter and in the venvs
they re-run themselves in (bench/venvs.py re-runs the same module, from the same directory), with
no ``sys.path`` edits. What they share is in bench/harness.py. The apps they serve
(bench/standalone_app.py, bench/bare_app.py) import only the project, which every benchmark venv
installs.
"""
