"""Process settings that help a run on the CPU, applied only to such a run.

The command-line tools call `apply_settings()` before JAX starts. Where the
run will use the CPU platform (JAX_PLATFORMS names cpu first, or it names
nothing and the host has no GPU or TPU), it turns on oneDNN's matmuls
(`onednn.py`) and restarts the process with huge pages for large allocations
(`huge_pages.py`). On a host with an accelerator, neither is touched (nor
JAX_PLATFORMS, which a host without one gets set to cpu).
`ELECTRA_JAX_CPU_SETTINGS=off` turns both off everywhere.
"""

import glob
import os
from typing import Mapping

import jax

from electra_jax.cpu import huge_pages, onednn

SWITCH = "ELECTRA_JAX_CPU_SETTINGS"
_OFF = ("0", "off", "false", "no")
# PCI vendor ids of the accelerators JAX runs on: Google's TPUs, and NVIDIA's and
# AMD's display and 3D controllers (class 0x03xxxx; their network cards and
# switches are other classes).
_TPU_VENDOR = "0x1ae0"
_GPU_VENDORS = ("0x10de", "0x1002")
_DISPLAY_CLASS = "0x03"


def host_has_accelerator(pci_devices: str = "/sys/bus/pci/devices",
                         nvidia_device: str = "/dev/nvidia0") -> bool:
  """Whether a TPU or a GPU sits on this host's PCI bus (or NVIDIA's driver shows one)."""
  for device in glob.glob(os.path.join(pci_devices, "*")):
    vendor, device_class = _read(device, "vendor"), _read(device, "class")
    gpu = vendor in _GPU_VENDORS and device_class.startswith(_DISPLAY_CLASS)
    if vendor == _TPU_VENDOR or gpu:
      return True
  return os.path.exists(nvidia_device)


def _read(device: str, name: str) -> str:
  try:
    with open(os.path.join(device, name), encoding="ascii") as f:
      return f.read().strip().lower()
  except OSError:
    return ""


def run_uses_cpu(environ: Mapping[str, str], has_accelerator: bool) -> bool:
  """Whether JAX will compute on the CPU: JAX_PLATFORMS' first platform, else the host's."""
  platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return platforms[0] == "cpu"
  return not has_accelerator


def wanted(environ: Mapping[str, str], has_accelerator: bool) -> bool:
  """Whether to apply the CPU settings: a CPU run, and not switched off."""
  if environ.get(SWITCH, "").strip().lower() in _OFF:
    return False
  return run_uses_cpu(environ, has_accelerator)


def apply_settings() -> None:
  """oneDNN's matmuls and huge pages for a run on the CPU; nothing elsewhere.

  On a host without an accelerator, with JAX_PLATFORMS unset, also sets it to
  cpu: JAX would otherwise try every installed plugin (libtpu, from the `tpu`
  extra, prints a dozen lines of failure) before falling back to the CPU.
  Must run before JAX starts a backend; may replace this process (huge pages).
  """
  has_accelerator = host_has_accelerator()
  if not has_accelerator and not os.environ.get("JAX_PLATFORMS"):
    os.environ["JAX_PLATFORMS"] = "cpu"  # for this process's children, and after a restart
    jax.config.update("jax_platforms", "cpu")  # jax read the variable when it was imported
  if not wanted(os.environ, has_accelerator):
    return
  onednn.use_onednn()
  huge_pages.restart_with_huge_pages()
