"""Foundations every layer may use: durable file writes, processes and pidfds, sd_notify.

Nothing here imports anything above the kernel (``errors``, ``clock``, ``config``).
"""
