"""``MeanFlowPipeline``: class labels -> images in one call, diffusers style.

```python
pipe = MeanFlowPipeline.from_pretrained("exported/")        # model_index.json, transformer/, vae/
images = pipe([207, 360], num_inference_steps=1, generator=torch.Generator().manual_seed(0)).images
```

It follows diffusers' ``DiTPipeline`` (``transformer`` + optional ``vae`` components,
``__call__(class_labels, num_inference_steps, generator, output_type, return_dict)`` returning
``.images``, ``model_index.json`` on disk) without subclassing ``DiffusionPipeline``: that
class resolves components through diffusers/transformers library registries and would make
diffusers a hard dependency even for pixel-space models. diffusers is needed only for a VAE
(``AutoencoderKL``). There is no scheduler: MeanFlow's sampler is the uniform-grid update of
``meanflow.sampler.sample`` and guidance is baked into the model (no second pass).
"""

import json
import os
from dataclasses import dataclass

import torch

from .checkpoint import atomic_directory
from .models import DiT
from .sampler import sample, to_pil, to_uint8
from .vae import SD_VAE_SCALE, decode_latents, latent_scale, load_vae

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class MeanFlowPipelineOutput:
    """``images``: a list of PIL images, a ``(B, H, W, C)`` float array in [0, 1] ("np"), a
    ``(B, C, H, W)`` tensor in [0, 1] ("pt") or the raw model output ("latent")."""

    images: object


class MeanFlowPipeline:
    """One-step (or few-step) class-conditional generation from a MeanFlow ``DiT``.

    ``transformer``: the DiT; ``vae``: a diffusers ``AutoencoderKL`` for latent models, None
    for pixel-space ones; ``scaling_factor``: the latent scale (the VAE config's, else
    0.18215); ``id2label``: optional ``{class id: "name, other name"}`` for ``get_label_ids``.
    """

    def __init__(self, transformer: DiT, vae=None, scaling_factor: float | None = None, id2label=None):
        if not isinstance(transformer, DiT):
            raise TypeError(f"transformer must be a meanflow DiT, got {type(transformer).__name__}")
        self.transformer = transformer.eval()
        self.vae = vae
        cfg = transformer.config
        if vae is not None:
            latent = getattr(vae.config, "latent_channels", None)
            if latent is not None and latent != cfg.in_channels:
                raise ValueError(f"vae has {latent} latent channels, the transformer {cfg.in_channels}")
            scaling_factor = scaling_factor or latent_scale(vae)[0]
        elif cfg.in_channels not in (1, 3):
            raise ValueError(
                f"the transformer makes {cfg.in_channels}-channel latents: pass the vae that decodes them"
            )
        self.scaling_factor = scaling_factor or SD_VAE_SCALE
        self.id2label = {int(k): v for k, v in (id2label or {}).items()}
        self.labels = {}
        for key, value in self.id2label.items():
            for name in value.split(","):
                self.labels[name.strip()] = key

    # ------------------------------------------------------------ diffusers API

    @property
    def components(self) -> dict:
        return {"transformer": self.transformer, "vae": self.vae}

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def to(self, device=None, dtype=None):
        self.transformer.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
        return self

    def get_label_ids(self, label):
        """Class names (as in ``id2label``) -> class ids."""
        labels = [label] if isinstance(label, str) else list(label)
        missing = [name for name in labels if name not in self.labels]
        if missing:
            raise ValueError(f"unknown class names {missing}; known e.g. {sorted(self.labels)[:5]}")
        return [self.labels[name] for name in labels]

    def _labels(self, class_labels, batch_size):
        num_classes = self.transformer.config.num_classes
        if num_classes == 0:
            if class_labels is not None:
                raise ValueError("class_labels must be None for an unconditional model; give batch_size")
            if not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(
                    f"batch_size must be an int >= 1 for an unconditional model, got {batch_size!r}"
                )
            return None, batch_size
        if class_labels is None:
            raise ValueError("class_labels is required for a class-conditional model")
        if isinstance(class_labels, int):
            class_labels = [class_labels]
        y = torch.as_tensor(class_labels).reshape(-1)
        if y.dtype not in (torch.int32, torch.int64) or y.numel() == 0:
            raise TypeError("class_labels must be a non-empty int, list of ints or integer tensor")
        if y.min() < 0 or y.max() > num_classes:
            raise ValueError(
                f"class_labels must lie in [0, {num_classes - 1}] (or {num_classes}, the null class), "
                f"got {y.min().item()}..{y.max().item()}"
            )
        return y.long().to(self.device), y.numel()

    def _noise(self, batch, generator):
        cfg = self.transformer.config
        shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if isinstance(generator, (list, tuple)):
            # diffusers' convention: one generator per image, so image i depends on its own seed only.
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for {batch} images")
            noise = [torch.randn((1, *shape), generator=g, device=g.device) for g in generator]
            return torch.cat([n.to(self.device) for n in noise]).to(self.dtype)
        device = generator.device if generator is not None else self.device
        return torch.randn((batch, *shape), generator=generator, device=device).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(
        self, class_labels=None, num_inference_steps: int = 1, generator=None, latents=None, batch_size=None
    ):
        """Images ``(B, C, H, W)`` in about ``[-1, 1]`` (decoded when there is a VAE) and the
        model output before decoding."""
        y, batch = self._labels(class_labels, batch_size)
        if latents is None:
            latents = self._noise(batch, generator)
        else:
            latents = latents.to(self.device, self.dtype)
        out = sample(self.transformer, y, steps=num_inference_steps, noise=latents)
        images = decode_latents(self.vae, out, self.scaling_factor) if self.vae is not None else out.float()
        return images, out

    def __call__(
        self,
        class_labels=None,
        num_inference_steps: int = 1,
        generator=None,
        latents=None,
        output_type: str = "pil",
        return_dict: bool = True,
        batch_size: int | None = None,
    ):
        """``class_labels``: ints (list, tensor) -- one image each; ``num_inference_steps``: NFE
        (1 = one step); ``generator``: a ``torch.Generator`` or one per image; ``latents``:
        starting noise; ``output_type``: "pil", "np", "pt" or "latent"; ``batch_size``: image
        count for an unconditional model. Returns ``MeanFlowPipelineOutput(images)`` or a tuple."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        images, raw = self.generate(class_labels, num_inference_steps, generator, latents, batch_size)
        if output_type == "latent":
            result = raw
        elif output_type == "pil":
            result = [to_pil(a) for a in to_uint8(images)]
        else:
            x = (images / 2 + 0.5).clamp(0, 1)
            result = x.cpu().permute(0, 2, 3, 1).numpy() if output_type == "np" else x
        return MeanFlowPipelineOutput(images=result) if return_dict else (result,)

    # ------------------------------------------------------------------ on disk

    def save_pretrained(self, directory: str):
        """``model_index.json``, ``transformer/`` (config + safetensors), ``vae/`` (diffusers)."""
        index = {
            "_class_name": type(self).__name__,
            "transformer": ["meanflow", "DiT"],
            "vae": ["diffusers", type(self.vae).__name__] if self.vae is not None else [None, None],
            "scaling_factor": self.scaling_factor,
        }
        if self.id2label:
            index["id2label"] = {str(k): v for k, v in sorted(self.id2label.items())}
        with atomic_directory(directory) as tmp:
            self.transformer.save_pretrained(os.path.join(tmp, "transformer"))
            if self.vae is not None:
                self.vae.save_pretrained(os.path.join(tmp, "vae"))
            with open(os.path.join(tmp, "model_index.json"), "w") as f:
                json.dump(index, f, indent=2)
                f.write("\n")

    @classmethod
    def from_pretrained(cls, directory: str, device="cpu", vae=None, backend=None):
        """Load what ``save_pretrained`` wrote; ``vae`` overrides the saved one (an
        ``AutoencoderKL`` or a local folder / weights file for :func:`meanflow.vae.load_vae`)."""
        index_path = os.path.join(directory, "model_index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(f"{index_path} not found: not a MeanFlowPipeline directory")
        with open(index_path) as f:
            index = json.load(f)
        transformer = DiT.from_pretrained(
            os.path.join(directory, "transformer"), device=device, backend=backend
        )
        if isinstance(vae, str):
            vae = load_vae(vae, device=device)
        elif vae is None and (index.get("vae") or [None])[0] is not None:
            vae = load_vae(os.path.join(directory, "vae"), device=device)
        return cls(transformer, vae, index.get("scaling_factor"), index.get("id2label"))
