"""Side-by-side benchmark of wsendpoints against peer WebSocket stacks: `python -m benchmarks`.

See `benchmarks/README.md`.
"""
