"""rtdecode.deploy (the folder deploy/): TensorRT engine build (`rtdecode build-engine`) and the
deployment files (lsl_api.cfg, the systemd unit). Engine sidecars and their checks live in
rtdecode.engines.sidecar, where serving loads engines. `import rtdecode.deploy` needs neither
TensorRT nor CUDA (those are imported inside the functions that need them).
"""

if __name__ != "rtdecode.deploy":  # one name per file: the folder deploy/ installs as rtdecode.deploy
    raise ImportError(f"import rtdecode.deploy, not {__name__}: the folder deploy/ is the package rtdecode.deploy")
