"""`roadnode bench`: a fixed, seeded benchmark suite (docs/BENCHMARKS.md).

- `suite`    — the measurements (detector, pipeline, memory, cold start, packets, store, uplink,
               soak), each a plain dict of figures;
- `report`   — the JSON document and the markdown tables written into docs/BENCHMARKS.md;
- `commands` — the CLI (`roadnode bench [--quick] [--json FILE] [--write-docs] [--soak S]`).

Speed is measured here, never asserted in tests: the figures depend on the machine and its load.
"""
