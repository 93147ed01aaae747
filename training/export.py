"""Export a trained decoder to one self-contained rtdecode ONNX file and check it against torch.

The exported graph is the *deployed form* of the decoder: the RF layer's Gaussian bases Gx, Gy
and the reciprocal of each map's Gaussian density depend on the parameters only, so they are
computed once here and stored as initializers per electrode group (see DeployedDecoder); the
graph is then Gathers, MatMuls and a Mul in front of the U-Net (BatchNorm is folded
into the convolutions by the exporter). Selecting each group's electrodes also applies the
map mask. The learned RF centres and widths, which the graph no
longer needs, travel in metadata: `training.rf_centres` / `training.rf_sigmas` =
{"shape": [...], "data": base64 float32 little-endian}.

Parity: ONNX Runtime (CPU) vs torch on random inputs and on real inputs (validation maps kept in
the checkpoint), batch 1 and batch > 1, max abs difference <= 1e-4, or ModelError.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rtdecode.contract import INPUT_NAME, OUTPUT_NAME, read_contract
from rtdecode.errors import ConfigError, ModelError
from rtdecode.onnx_io import attach_contract, save_model, set_input_fit
from rtdecode.progress import ProgressBar, progress_bar

from .checkpoint import contract_from_checkpoint, load_checkpoint, model_from_checkpoint
from .model import HomeomorphicDecoder

log = logging.getLogger(__name__)
PARITY_TOL = 1e-4
RF_CENTRES_KEY = "training.rf_centres"
RF_SIGMAS_KEY = "training.rf_sigmas"


class DeployedDecoder(nn.Module):
    """The decoder with its RF layer reduced to fixed buffers: what ONNX and engines run.

    Per electrode group g (maps sharing their electrodes): `gx{g}` [Eg, W], `gy{g}` [Eg, H] and
    `scale{g}` [H, W] (1 / (density + eps), or ones), so the graph paints each group with its own
    electrodes only. The state dict (= the ONNX initializers by name) is gx*, gy*, scale* and
    generator.*; the group indices are rebuilt from the mask (HomeomorphicDecoder.from_args(args,
    mask=contract.mask)).
    """

    def __init__(self, model: HomeomorphicDecoder):
        super().__init__()
        rf = model.rf
        self.n_groups = len(rf.groups)
        with torch.no_grad():
            gx, gy = rf.bases()
            for g, (maps, elec) in enumerate(rf.groups):
                e = torch.as_tensor(elec, dtype=torch.long)
                gxg, gyg = gx[e].clone(), gy[e].clone()
                scale = (1.0 / (gyg.transpose(0, 1) @ gxg + rf.norm_eps) if rf.normalise
                         else torch.ones(rf.image_size, rf.image_size))
                # index buffers follow from the mask: not part of the state dict (the exporter renames them)
                self.register_buffer(f"maps{g}", torch.as_tensor(maps, dtype=torch.long), persistent=False)
                self.register_buffer(f"elec{g}", e, persistent=False)
                self.register_buffer(f"gx{g}", gxg)
                self.register_buffer(f"gy{g}", gyg)
                self.register_buffer(f"scale{g}", scale)
        self.register_buffer("inverse_order", rf._inverse_order.clone(), persistent=False)
        self.generator = model.generator

    def forward(self, mua: torch.Tensor) -> torch.Tensor:
        out = []
        for g in range(self.n_groups):
            xg = mua.index_select(1, getattr(self, f"maps{g}")).index_select(2, getattr(self, f"elec{g}"))
            painted = torch.matmul((xg.unsqueeze(-1) * getattr(self, f"gy{g}")).transpose(-1, -2),
                                   getattr(self, f"gx{g}"))
            out.append(painted * getattr(self, f"scale{g}"))
        painted = torch.cat(out, dim=1)
        if self.n_groups > 1:
            painted = painted.index_select(1, self.inverse_order)
        return self.generator(painted)


@dataclass
class ExportReport:
    path: Path
    model_id: str
    size_bytes: int
    max_abs_diff: dict[str, float]


def weights_sha(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, name: str | None = None,
                      real_inputs: np.ndarray | None = None, opset: int = 18, progress: bool = True,
                      tol: float = PARITY_TOL, fit_data: str | Path | None | bool = None) -> ExportReport:
    """Checkpoint -> self-contained .onnx with the rtdecode contract; parity-checked; read back.

    fit_data: a session .h5 of the animal for the input-fit statistics (rtdecode.fit); None =
    the checkpoint's training session when it is a session file that exists; False = none.
    """
    steps = _Steps(progress_bar(6, "export", enabled=progress, unit="step"))
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    config = json.loads(ckpt["config"])
    name = name or f"homeomorphic-{config.get('preset', 'custom')}"
    model_id = f"{name}-{weights_sha(model)[:8]}"
    contract = contract_from_checkpoint(ckpt, model_id)
    steps.done("loaded checkpoint")

    deployed = DeployedDecoder(model).eval()
    m, e = contract.input_shape
    example = torch.zeros(2, m, e)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        batch = torch.export.Dim("batch", min=1, max=4096)
        _quiet_export(deployed, example, raw, batch, opset)
        import onnx

        onnx_model = onnx.load(str(raw), load_external_data=True)
    steps.done("traced to ONNX")

    _name_batch_dims(onnx_model)
    attach_contract(onnx_model, contract)
    _set_meta(onnx_model, RF_CENTRES_KEY, model.rf_centres().numpy())
    _set_meta(onnx_model, RF_SIGMAS_KEY, model.rf_sigmas().numpy())
    onnx.checker.check_model(onnx_model)
    save_model(onnx_model, out)
    steps.done("attached metadata and saved")

    real = real_inputs
    if real is None and ckpt.get("sample_inputs") is not None:
        real = ckpt["sample_inputs"].numpy()
    diffs = check_parity(model, out, real_inputs=real, tol=tol)
    steps.done("parity ORT vs torch: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))

    session = _fit_session(ckpt, fit_data)
    stats = None
    if session is not None:
        try:
            stats = input_fit_from_session(session, contract)
        except ConfigError as e:  # e.g. a session too short: asked for -> error; automatic -> said, skipped
            if fit_data not in (None, True):
                raise
            log.warning("export without input-fit statistics: %s", e)
    if stats is not None:
        set_input_fit(out, stats)
        steps.done(f"input-fit statistics from {session.name} (k {stats.info['k']}, "
                   f"{stats.info['windows_fit']} windows)")
    else:
        steps.done("no input-fit statistics")

    read_contract(out)
    steps.done("read back the contract")
    steps.close()
    return ExportReport(out, model_id, out.stat().st_size, diffs)


def _fit_session(ckpt: dict[str, Any], fit_data: str | Path | None | bool) -> Path | None:
    if fit_data is False:
        return None
    if fit_data not in (None, True):
        path = Path(fit_data)
        if not path.is_file():
            raise ModelError("input-fit data does not exist; expected an rtdecode session .h5", path=str(path))
        return path
    source = json.loads(ckpt.get("data") or "{}").get("source", "")
    path = Path(source) if source else None
    return path if path is not None and path.is_file() and path.suffix in (".h5", ".hdf5") else None


def input_fit_from_session(path: str | Path, contract: Any, **kw: Any):
    """rtdecode.fit statistics of the model's windows on a session file (its first 300 s by default)."""
    from rtdecode.fit import compute_fit_stats
    from rtdecode.layout import check_channels
    from rtdecode.sessions.session_file import open_session

    session = open_session(path, need_images=False)
    try:
        check_channels(contract.layout, session.n_channels, f"{path}:/mua")
        return compute_fit_stats(session.mua, contract, info={"source": Path(path).name, "how": "rtdecode export"},
                                 **kw)
    finally:
        session.close()


def check_parity(model: HomeomorphicDecoder, onnx_path: str | Path, *, real_inputs: np.ndarray | None = None,
                 tol: float = PARITY_TOL, seed: int = 0) -> dict[str, float]:
    """Max |ORT - torch| on random (batch 1 and 3) and real inputs; ModelError above tol."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    model = model.eval()
    mask = model.rf.mask.numpy()
    rng = np.random.default_rng(seed)
    m, e = mask.shape
    cases: dict[str, np.ndarray] = {
        "random_b1": (rng.standard_normal((1, m, e)) * mask).astype(np.float32),
        "random_b3": rng.standard_normal((3, m, e)).astype(np.float32),  # unmasked: the graph masks
    }
    if real_inputs is not None and len(real_inputs):
        real = np.ascontiguousarray(real_inputs, dtype=np.float32)
        cases["real_b1"] = real[:1]
        if len(real) > 1:
            cases[f"real_b{len(real)}"] = real
    diffs = {}
    with torch.no_grad():
        for key, x in cases.items():
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            want = model(torch.from_numpy(x)).numpy()
            if got.shape != want.shape:
                raise ModelError(f"parity {key}: ONNX output shape {got.shape}, torch {want.shape}", path=str(onnx_path))
            diffs[key] = float(np.abs(got - want).max())
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise ModelError(f"ONNX Runtime disagrees with torch beyond {tol}: {bad}", path=str(onnx_path))
    return diffs


def read_rf_metadata(onnx_path: str | Path) -> dict[str, np.ndarray]:
    """Learned RF centres [E, 2] and widths [E] stored by export (empty dict if absent)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    out = {}
    for key, short in ((RF_CENTRES_KEY, "rf_centres"), (RF_SIGMAS_KEY, "rf_sigmas")):
        if key in meta:
            d = json.loads(meta[key])
            out[short] = np.frombuffer(base64.b64decode(d["data"]), dtype="<f4").reshape(d["shape"]).copy()
    return out


def _set_meta(model: Any, key: str, arr: np.ndarray) -> None:
    keep = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    p = model.metadata_props.add()
    a = np.ascontiguousarray(arr, dtype="<f4")
    p.key, p.value = key, json.dumps({"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()})


def _name_batch_dims(model: Any) -> None:
    """Input and output dimension 0 is called 'batch' (dynamic)."""
    for vi in list(model.graph.input) + list(model.graph.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        if not d0.HasField("dim_value") or d0.dim_value != 1:
            d0.ClearField("dim_value")
            d0.dim_param = "batch"


def _quiet_export(module: nn.Module, example: torch.Tensor, path: Path, batch: Any, opset: int) -> None:
    import contextlib
    import io

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, opset_version=opset)
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed ({type(e).__name__}: {e}); exporter output:\n{buf.getvalue()}",
                         path=str(path)) from e
    log.debug("exporter output: %s", buf.getvalue())


class _Steps:
    """Each export step logged and shown on the progress bar."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar

    def done(self, what: str) -> None:
        log.info("export: %s", what)
        self.bar.set_postfix(what[:60])
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
