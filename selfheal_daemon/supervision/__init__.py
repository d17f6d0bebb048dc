"""Worker processes: their events and states, the supervisor's pure policy (``policy.decide``),
the pool, the warm template's client, adoption of leftover workers, and the probes.
"""
