"""Uploading evidence to the central: uploader, retry policy, telemetry, reference ingest
(issue 6; nothing here runs yet)."""
