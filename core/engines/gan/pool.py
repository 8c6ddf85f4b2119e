"""The image history buffer of Shrivastava et al., as CycleGAN uses it for its discriminators.

Half of the time the discriminator sees an older generated image instead of the newest one, which damps
oscillation between G and D. The buffer's random choices come from its own ``torch.Generator`` and its
content and generator state are part of :meth:`state_dict`, so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, pool_size: int, seed: int = 0) -> None:
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape: each image is the new one or, with p=0.5 once full, a stored one
        (which the new one then replaces). (N, C, H, W) -> (N, C, H, W)."""
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
                continue
            # Random numbers come from a CPU generator: no device synchronisation on CUDA.
            if torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(0, self.pool_size, (), generator=self.generator).item())
                out.append(self.images[idx])
                self.images[idx] = image
            else:
                out.append(image)
        return torch.stack(out, 0)

    def state_dict(self) -> dict[str, Any]:
        stacked = torch.stack([im.cpu() for im in self.images], 0) if self.images else torch.empty(0)
        return {"pool_size": self.pool_size, "images": stacked, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.pool_size = int(state["pool_size"])
        images = state["images"]
        self.images = [im.to(device) for im in images] if images.numel() else []
        self.generator.set_state(state["generator"])
