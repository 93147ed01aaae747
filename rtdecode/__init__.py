"""rtdecode: real-time reconstruction of what a macaque sees, from streamed multi-unit activity.

The runtime (this package) needs numpy, onnxruntime, pylsl, pyzmq and h5py only; torch and
TensorRT are imported lazily by the parts that need them (training/, GPU engines).
"""

__version__ = "0.1.0"
