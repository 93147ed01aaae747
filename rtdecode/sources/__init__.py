"""Sources of live MUA for the serve loop.

A source fills a `rtdecode.ringbuffer.RingBuffer` from a background thread and reports what it
saw (samples, gaps, NaN, reconnects) into a `rtdecode.telemetry.Telemetry`. The serve loop
only reads the ring, the source's `markers` queue and its `failure` (a failed thread).

Thread failures follow rtdecode.threads: the error is stored with context, logged once, and
the service stops cleanly with it in the summary (or re-raises it when RTDECODE_RAISE_IN_THREADS
is set, as the test suite does).
"""
