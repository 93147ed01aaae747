"""Where decoded frames and the service's state go: the ZeroMQ publisher (the display's feed), the
crash-safe frame recorder, the local web dashboard and the Prometheus endpoint."""
