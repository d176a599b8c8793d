"""Which physical GPU a process uses, comparable across processes (torch only, no Ray)."""
from __future__ import annotations


def cuda_device_uuid(index: int | None = None) -> str | None:
    """The UUID of a visible CUDA device (the current one by default); None without CUDA.

    Indexes differ between processes (Ray sets CUDA_VISIBLE_DEVICES per actor), UUIDs do not, so
    two ranks on one card are found by comparing these.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index)
    uuid = str(getattr(props, "uuid", "") or "")
    return uuid or f"pci:{props.pci_domain_id}:{props.pci_bus_id}:{props.pci_device_id}"
