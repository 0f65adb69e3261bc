"""`python -m bench`: throughput, latency, resume, ingest and scale, ours next to DBOS.

See bench/README.md.
"""
