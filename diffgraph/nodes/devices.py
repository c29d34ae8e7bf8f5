"""Whether a device the user asked for exists here, said before anything runs."""

from __future__ import annotations


def device_problem(device: str) -> str | None:
    """None when `device` (cpu, cuda, cuda:N, mps) can be used by this torch on this machine, else why not.

    torch is imported only for a device other than the CPU, so a CPU run or a validation stays light.
    """
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return None
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch ({torch.__version__}) was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            return f"device {device!r} is not available: {why}; use --device cpu, or install a CUDA build of torch"
        count = torch.cuda.device_count()
        if index and (not index.isdigit() or int(index) >= count):
            return f"device {device!r} is not available: this machine has cuda:0 to cuda:{count - 1}"
        return None
    if kind == "mps":
        if not torch.backends.mps.is_available():
            return f"device {device!r} is not available: MPS needs an Apple-silicon Mac; use --device cpu"
        return None
    return None  # unknown names are check_device's to reject
