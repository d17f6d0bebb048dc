"""The wiring: the run loop, control operations, the bridge to the control endpoint, resuming
incidents after a restart, drills, and the runner that builds it all from a config.
"""
