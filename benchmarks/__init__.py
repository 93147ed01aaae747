"""Latency benchmarks of rtdecode: inference, end-to-end over LSL and ZeroMQ, a first-try baseline.

Run them with `rtdecode bench` (rtdecode/commands/bench.py); each part writes JSON, a markdown
table and PNG plots through benchmarks.report. See docs/benchmarks.md.
"""
