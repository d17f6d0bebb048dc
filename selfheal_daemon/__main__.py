"""``python -m selfheal_daemon`` is the ``selfheal`` command."""

from __future__ import annotations

from selfheal_daemon.cli.app import main

main()
