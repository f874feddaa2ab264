"""The tools, one module per family of operations: reads, power actions, password reset, update."""
