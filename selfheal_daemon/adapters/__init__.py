"""Thin adapters around the world: files, processes, probes. The decision core never uses them."""
