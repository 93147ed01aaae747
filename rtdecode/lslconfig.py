"""Keep LSL discovery on this machine unless the user opts into a wider scope.

liblsl's default resolve scope sends multicast/broadcast queries out of every interface. For a
single-machine rig (and every test, demo and benchmark) rtdecode applies machine scope before the
first LSL call of the process. A multi-machine rig opts out by pointing LSLAPICFG at its own
lsl_api.cfg, or by `lsl_scope = "network"` in its serve config (`--lsl-scope network`).
"""

from __future__ import annotations

import os
from pathlib import Path

MACHINE_SCOPE_CFG = """\
[multicast]
ResolveScope = machine
Interfaces = {127.0.0.1}
[lab]
KnownPeers = {127.0.0.1}
[ports]
IPv6 = disable
[log]
level = -1
"""

_applied: str | None = None


def configure_lsl(scope: str = "machine", config_file: str | os.PathLike | None = None) -> str:
    """Apply the LSL configuration once per process, before any other LSL call; returns what was applied.

    - config_file given: its text is applied.
    - LSLAPICFG set in the environment: liblsl reads that file itself; nothing is overridden.
    - scope "machine" (default): MACHINE_SCOPE_CFG.
    - scope "network": liblsl's own defaults (multicast on the site/network).
    """
    global _applied
    if _applied is not None:
        return _applied
    import pylsl

    if config_file is not None:
        text = Path(config_file).read_text()
        pylsl.set_config_content(text)
        _applied = f"file:{config_file}"
    elif os.environ.get("LSLAPICFG"):
        _applied = f"env:LSLAPICFG={os.environ['LSLAPICFG']}"
    elif scope == "machine":
        pylsl.set_config_content(MACHINE_SCOPE_CFG)
        _applied = "machine"
    elif scope == "network":
        _applied = "network"
    else:
        from .errors import ConfigError

        raise ConfigError(f"lsl_scope must be 'machine' or 'network', got {scope!r}")
    return _applied


def lsl():
    """Return the pylsl module with the configuration applied (machine scope by default)."""
    configure_lsl()
    import pylsl

    return pylsl
