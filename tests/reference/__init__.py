"""Slow, obviously-correct NumPy oracles, one module per area; every fast kernel is tested
against one of them."""
