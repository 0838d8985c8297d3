"""Delivering packets to the central, each exactly once (issue 6, docs/uplink-protocol.md).

- `node.uplink.uploader`: `Uploader(store, cfg)` with start(), stop(), status(), upload_now();
  `make_session`, `config_problems`, `interpret`.
- `node.uplink.retry`: `RetryPolicy` (capped exponential backoff, full jitter, Retry-After),
  `classify` (never left / maybe delivered).
- `node.uplink.link`: bandwidth cap (`TokenBucket`) and `UploadWindows`.
- `node.uplink.telemetry`: `Heartbeat`, the signed telemetry packet every N minutes.
- `node.uplink.ingest`: `IngestServer`, the reference central ingest (`roadnode ingest`).
- `node.uplink.bench`: `bench_drain`, the drain rate to a loopback ingest.

Only the standard library is imported here; the modules import requests and cryptography.
"""
