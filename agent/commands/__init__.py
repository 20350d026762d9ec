"""CLI command groups. Each module defines ``register(sub, common)`` and an ``ORDER`` for --help."""
