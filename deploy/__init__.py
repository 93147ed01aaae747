"""Deployment: TensorRT engine build (`rtdecode build-engine`), engine sidecars, service files.

Nothing here is imported by serving unless a TensorRT engine is used; `import deploy` needs
neither TensorRT nor CUDA (those are imported inside the functions that need them).
"""
