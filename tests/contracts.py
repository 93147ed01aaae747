"""A tiny rtdecode contract (16 channels, 3 areas) for tests of engines, sidecars and selection."""

from __future__ import annotations

from rtdecode.contract import DecoderContract
from rtdecode.layout import ElectrodeLayout
from rtdecode.windows import make_plan


def tiny_contract(rng, image: int = 8, model_args: dict | None = None, model_id: str = "tiny-gpu") -> DecoderContract:
    lay = ElectrodeLayout.from_dict({"name": "tiny", "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]},
        {"id": 2, "area": "V4", "channels": [[8, 11]]},
        {"id": 3, "area": "IT", "channels": [[12, 15]]}]})
    plan = make_plan("spatiotemporal", lay)
    shape = (plan.n_maps, lay.n_electrodes)
    cfg = {"model_args": model_args} if model_args else {}
    return DecoderContract(lay, plan, rng.normal(size=shape), rng.uniform(0.5, 2, size=shape), image, image,
                           model_id, cfg)
