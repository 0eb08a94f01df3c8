"""Hostile tests: fuzzed HTTP clients and hostile children against the real `portero serve`."""
