"""Hostile-client tests: every defence tried as an attacker would, with the refusal asserted."""
