"""rtdecode.training (the folder training/): datasets, the homeomorphic decoder, losses, training,
evaluation, ONNX export. Needs torch (the `train` extra); serving never imports it."""

if __name__ != "rtdecode.training":  # one name per file: the folder training/ installs as rtdecode.training
    raise ImportError(f"import rtdecode.training, not {__name__}: the folder training/ is the package rtdecode.training")
