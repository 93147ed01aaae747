"""Offline side of rtdecode: datasets, the homeomorphic decoder, training, evaluation, ONNX export."""
