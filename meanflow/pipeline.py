"""``MeanFlowPipeline``: class labels -> images in one call, a diffusers ``DiffusionPipeline``.

```python
pipe = MeanFlowPipeline.from_pretrained("exported/", torch_dtype=torch.float16).to("cuda")
images = pipe(["tench", "n01443537", 207], generator=torch.Generator("cuda").manual_seed(0)).images
```

Like diffusers' ``DiTPipeline``: components ``transformer`` (a MeanFlow DiT) and ``vae`` (a
diffusers ``AutoencoderKL``; None for pixel-space models), ``id2label`` in
``model_index.json``, ``get_label_ids``, and everything ``DiffusionPipeline`` gives (``to``
with devices and dtypes, ``config``, ``progress_bar`` / ``set_progress_bar_config``,
``enable_model_cpu_offload``). There is no scheduler: the update is MeanFlow's uniform-grid
sampler (``meanflow.sampler.sample``), which no diffusers scheduler reproduces.

Diffusers loads the folder through its mechanism for code outside the diffusers package:
``model_index.json`` names ``meanflow.pipeline`` as the transformer's library, and the
pipeline class as ``["pipeline_meanflow", "MeanFlowPipeline"]``, a two-line file in the folder
that imports this module. So ``DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)`` works offline (diffusers asks for ``trust_remote_code`` before it runs
any file of a folder), and ``MeanFlowPipeline.from_pretrained(folder)`` needs neither.
"""

import copy
import json
import math
import numbers
import os
from dataclasses import dataclass

import torch

try:
    from diffusers import DiffusionPipeline, ModelMixin
    from diffusers.utils import BaseOutput
except ImportError as e:  # diffusers is optional for the rest of meanflow
    raise ImportError("MeanFlowPipeline needs diffusers: pip install diffusers") from e

from mfkernels import dispatch

from .checkpoint import atomic_directory
from .checks import check_int_at_least
from .interchange import read_json_object, read_one_export
from .models import DiT
from .sampler import sample, to_pil, to_uint8
from .vae import SD_VAE_SCALE, decode_latents, latent_scale, load_vae, needs_vae

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# The file diffusers imports for ``DiffusionPipeline.from_pretrained``: it only points back here.
LOADER_MODULE = "pipeline_meanflow"
LOADER_SOURCE = '''"""Loads MeanFlowPipeline from the installed package (pip install meanflow-engine)."""

from meanflow.pipeline import MeanFlowPipeline  # noqa: F401
'''
# What exports written before the pipeline was a DiffusionPipeline name as the transformer.
LEGACY_TRANSFORMER = ["meanflow", "DiT"]


class MeanFlowTransformer2DModel(DiT, ModelMixin):
    """A MeanFlow ``DiT`` that diffusers can load, move and offload as a pipeline component:
    same weights, forward and folder (``config.json`` + ``model.safetensors``) as ``DiT``.
    ``config`` stays the ``DiTConfig``; diffusers' own config machinery is not used."""

    @classmethod
    def from_dit(cls, dit: DiT) -> "MeanFlowTransformer2DModel":
        """``dit`` as this class, sharing its weights and submodules (nothing is copied)."""
        return dit if isinstance(dit, cls) else _share_weights(cls, dit)

    def to_dit(self) -> DiT:
        """A plain ``DiT`` sharing these weights and submodules."""
        return _share_weights(DiT, self)

    def save_pretrained(self, save_directory: str, state_dict: dict | None = None):
        """The plain ``DiT`` folder, which ``DiT.from_pretrained`` reads too."""
        self.to_dit().save_pretrained(save_directory, state_dict)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        device="cpu",
        dtype=None,
        backend=None,
        torch_dtype=None,
        **options,
    ) -> "MeanFlowTransformer2DModel":
        """Read a ``DiT`` folder. Diffusers' loader passes its model options too: those that
        need diffusers' own weight format are refused, the rest (memory hints) ignored."""
        for name in ("device_map", "variant", "quantization_config"):
            if options.get(name) is not None:
                raise ValueError(
                    f"{name} is not supported for a MeanFlow transformer (got {options[name]!r})"
                )
        if options.get("use_flashpack"):
            raise ValueError("use_flashpack is not supported for a MeanFlow transformer")
        dit = DiT.from_pretrained(
            str(pretrained_model_name_or_path), device=device, dtype=dtype or torch_dtype, backend=backend
        )
        return cls.from_dit(dit)


# A view shares these with its model, so that moving or casting either moves both alike.
SHARED_STATE = ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")


def _share_weights(cls, model: DiT) -> DiT:
    """``model`` seen as a ``cls``: the same parameters, buffers and submodules (nothing is
    copied, and ``to`` on either moves both); its own mode flag and hooks."""
    view = cls.__new__(cls)
    for key, value in vars(model).items():
        own = isinstance(value, (dict, set)) and key not in SHARED_STATE
        view.__dict__[key] = copy.copy(value) if own else value
    view._gradient_checkpointing_func = None  # what ModelMixin.__init__ would have set
    return view


@dataclass
class MeanFlowPipelineOutput(BaseOutput):
    """``images``: a list of PIL images, a ``(B, H, W, C)`` float array in [0, 1] ("np"), a
    ``(B, C, H, W)`` tensor in [0, 1] ("pt") or the raw model output ("latent")."""

    images: object


class GuidedVelocity(torch.nn.Module):
    """The average velocity the sampler steps with: the transformer's, with classifier-free
    guidance on top when ``guidance_scale != 1``, calling ``on_step`` after each evaluation."""

    def __init__(self, transformer: DiT, guidance_scale: float, on_step=None):
        super().__init__()
        self.transformer, self.guidance_scale, self.on_step = transformer, guidance_scale, on_step
        self.train(transformer.training)  # the sampler restores this mode, so it must be the transformer's

    @property
    def config(self):
        return self.transformer.config

    def forward(self, z, r, t, y=None):
        if self.guidance_scale == 1 or y is None:
            u = self.transformer(z, r, t, y)
        else:
            u = self._guided(z, r, t, y)
        if self.on_step is not None:
            self.on_step()
        return u

    def _guided(self, z, r, t, y):
        """``u_null + s (u_cond - u_null)``, both halves in one batch."""
        null = torch.full_like(y, self.transformer.null_class)
        u = self.transformer(torch.cat([z, z]), torch.cat([r, r]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = u.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)


class MeanFlowPipeline(DiffusionPipeline):
    """One-step (or few-step) class-conditional generation from a MeanFlow ``DiT``.

    ``transformer``: the DiT (a plain ``DiT`` becomes a :class:`MeanFlowTransformer2DModel`
    sharing its weights); ``vae``: a diffusers ``AutoencoderKL`` for latent models, None for
    pixel-space ones; ``scaling_factor`` and ``shift_factor``: the latent scale and shift the
    model's latents were made with, ``(z - shift) * scale`` (the VAE config's, else 0.18215 and
    0); ``id2label``: ``{class id: "name, other name"}`` -- every comma-separated name of a class
    is accepted by ``get_label_ids`` and as a class label of a call. The scale and the shift
    are saved in ``model_index.json``, so a pipeline read with another VAE decodes with them.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: DiT,
        vae=None,
        scaling_factor: float | None = None,
        id2label=None,
        shift_factor: float | None = None,
    ):
        super().__init__()
        if not isinstance(transformer, DiT):
            raise TypeError(f"transformer must be a meanflow DiT, got {type(transformer).__name__}")
        transformer = MeanFlowTransformer2DModel.from_dit(transformer).eval()
        scaling_factor = _latent_scaling_factor(transformer, vae, scaling_factor)
        shift_factor = _latent_shift_factor(vae, shift_factor)
        self.register_modules(transformer=transformer, vae=vae)
        id2label = _checked_id2label(id2label, transformer.config.num_classes)
        self.register_to_config(scaling_factor=scaling_factor, shift_factor=shift_factor, id2label=id2label)
        self.labels, self._ambiguous_labels = _label_index(self.id2label)

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.config.shift_factor

    @property
    def id2label(self) -> dict:
        return {int(k): v for k, v in (self.config.id2label or {}).items()}

    # ------------------------------------------------------------------ labels

    def get_label_ids(self, label) -> list:
        """Class names (any name ``id2label`` gives a class: ``"tench"``, ``"n01440764"``) ->
        class ids. Unknown and ambiguous names are a ``ValueError`` naming them."""
        names = [label] if isinstance(label, str) else list(label)
        unknown = [n for n in names if n not in self.labels and n not in self._ambiguous_labels]
        if unknown:
            if not self.labels:
                raise ValueError(
                    f"unknown class names {unknown}: this pipeline has no id2label; give class ids"
                )
            raise ValueError(f"unknown class names {unknown}; known e.g. {sorted(self.labels)[:5]}")
        ambiguous = {n: self._ambiguous_labels[n] for n in names if n in self._ambiguous_labels}
        if ambiguous:
            raise ValueError(f"ambiguous class names {ambiguous} (name: its classes); give a class id")
        return [self.labels[n] for n in names]

    def _class_ids(self, class_labels):
        """Ids, names, or a mix of both -> ids (a tensor is passed through)."""
        if isinstance(class_labels, (str, int)):
            class_labels = [class_labels]
        if isinstance(class_labels, (list, tuple)):
            if any(isinstance(c, bool) for c in class_labels):  # [True, 3] would be a tensor [1, 3]
                raise TypeError(f"class_labels must be class ids or names, not bools: got {class_labels!r}")
            return [self.get_label_ids(c)[0] if isinstance(c, str) else c for c in class_labels]
        return class_labels

    def _labels(self, class_labels, batch_size):
        num_classes = self.transformer.config.num_classes
        if num_classes == 0:
            if class_labels is not None:
                raise ValueError("class_labels must be None for an unconditional model; give batch_size")
            check_int_at_least("batch_size", batch_size, why=" for an unconditional model")
            return None, batch_size
        if class_labels is None:
            raise ValueError("class_labels is required for a class-conditional model")
        y = torch.as_tensor(self._class_ids(class_labels)).reshape(-1)
        if y.dtype not in (torch.int32, torch.int64) or y.numel() == 0:
            raise TypeError(
                "class_labels must be a non-empty int, class name, list of them or integer tensor"
            )
        if y.min() < 0 or y.max() > num_classes:
            raise ValueError(
                f"class_labels must lie in [0, {num_classes - 1}] (or {num_classes}, the null class), "
                f"got {y.min().item()}..{y.max().item()}"
            )
        return y.long().to(self._execution_device), y.numel()

    # -------------------------------------------------------------- generation

    def _latent_shape(self) -> tuple:
        cfg = self.transformer.config
        return (cfg.in_channels, cfg.input_size, cfg.input_size)

    def _noise(self, batch, generator):
        shape = self._latent_shape()
        device, dtype = self._execution_device, self.transformer.dtype
        if isinstance(generator, (list, tuple)):
            # diffusers' convention: one generator per image, so image i depends on its own seed only.
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for {batch} images")
            noise = [torch.randn((1, *shape), generator=g, device=g.device) for g in generator]
            return torch.cat([n.to(device) for n in noise]).to(dtype)
        source = generator.device if generator is not None else device
        return torch.randn((batch, *shape), generator=generator, device=source).to(device, dtype)

    def _check_guidance(self, guidance_scale, conditional: bool) -> float:
        guidance_scale = _checked_number("guidance_scale", guidance_scale, 0)
        if guidance_scale != 1 and not conditional:
            raise ValueError(
                "guidance_scale must be 1 for an unconditional model: it has no classes to guide to"
            )
        return float(guidance_scale)

    @torch.no_grad()
    def generate(
        self,
        class_labels=None,
        num_inference_steps: int = 1,
        generator=None,
        latents=None,
        batch_size=None,
        guidance_scale: float = 1.0,
    ):
        """Images ``(B, C, H, W)`` in about ``[-1, 1]`` (decoded when there is a VAE) and the
        model output before decoding."""
        check_int_at_least("num_inference_steps", num_inference_steps)
        y, batch = self._labels(class_labels, batch_size)
        scale = self._check_guidance(guidance_scale, y is not None)
        if latents is None:
            latents = self._noise(batch, generator)
        else:
            _check_latents(latents, (batch, *self._latent_shape()))
            latents = latents.to(self._execution_device, self.transformer.dtype)
        with self.progress_bar(total=num_inference_steps) as bar:
            velocity = GuidedVelocity(self.transformer, scale, on_step=bar.update)
            out = sample(velocity, y, steps=num_inference_steps, noise=latents)
        if self.vae is None:
            return out.float(), out
        images = decode_latents(self.vae, out, self.scaling_factor, self.shift_factor)
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
        guidance_scale: float = 1.0,
    ):
        """``class_labels``: class ids or names (``id2label``'s; a list, tensor, or one) --
        one image each; ``num_inference_steps``: NFE per image (1 = one step); ``generator``: a
        ``torch.Generator`` or one per image; ``latents``: starting noise; ``output_type``:
        "pil", "np", "pt" or "latent"; ``batch_size``: image count for an unconditional model.

        ``guidance_scale``: the model was trained with guidance folded into its target, so 1
        (the default) samples it as trained, one network pass per step. Any other ``s`` adds
        sampling-time classifier-free guidance on top, ``u = u_null + s (u_cond - u_null)``
        with the learned null class: a second pass per step, and about ``s`` times the trained
        guidance strength (0 gives the unconditional model). DiT's default of 4 would
        over-guide a model whose guidance is already built in.

        Returns ``MeanFlowPipelineOutput(images)`` or a tuple."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        images, raw = self.generate(
            class_labels, num_inference_steps, generator, latents, batch_size, guidance_scale
        )
        self.maybe_free_model_hooks()
        result = _format_images(images, raw, output_type)
        return MeanFlowPipelineOutput(images=result) if return_dict else (result,)

    # ------------------------------------------------------------------ on disk

    def save_pretrained(self, save_directory: str):
        """``model_index.json``, ``transformer/`` (the ``DiT`` folder), ``vae/`` (diffusers)
        and the loader file for ``DiffusionPipeline.from_pretrained``; the folder appears
        only once complete, and only where :func:`meanflow.checkpoint.atomic_directory` may
        replace what is there."""
        with atomic_directory(save_directory) as tmp:
            self.transformer.save_pretrained(os.path.join(tmp, "transformer"))
            if self.vae is not None:
                self.vae.save_pretrained(os.path.join(tmp, "vae"))
            with open(os.path.join(tmp, "model_index.json"), "w") as f:
                json.dump(self._model_index(), f, indent=2, sort_keys=True)
                f.write("\n")
            with open(os.path.join(tmp, f"{LOADER_MODULE}.py"), "w") as f:
                f.write(LOADER_SOURCE)

    def _model_index(self) -> dict:
        index = json.loads(self.to_json_string())
        index.pop("_name_or_path", None)  # where this copy was loaded from: a local path
        index["_class_name"] = [LOADER_MODULE, type(self).__name__]
        return index

    @classmethod
    def load_config(cls, *args, **kwargs):
        """The folder's ``model_index.json``, read as this class: the loader file it names is
        for ``DiffusionPipeline.from_pretrained`` (this class is already imported), and an
        export from before the pipeline was a ``DiffusionPipeline`` names the plain ``DiT``."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        config["_class_name"] = cls.__name__
        if config.get("transformer") == LEGACY_TRANSFORMER:
            config["transformer"] = [__name__, MeanFlowTransformer2DModel.__name__]
        return loaded

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, device=None, vae=None, backend=None, **kwargs):
        """Load what ``save_pretrained`` wrote, through ``DiffusionPipeline.from_pretrained``
        (``torch_dtype=``, passed components, ...). ``vae``: an ``AutoencoderKL`` or a local
        folder / weights file for :func:`meanflow.vae.load_vae`, instead of the saved one (it
        decodes with the folder's scale and shift, those of the VAE the model was trained with,
        not its own config's); ``device``: where to put the pipeline; ``backend``: the
        transformer's mfkernels backend.

        ``vae/``, ``model_index.json`` and ``transformer/`` are read by path one after another:
        an export replacing the folder meanwhile would pair one export's VAE and scale with the
        other's transformer, so they are read again until one export was read whole
        (:func:`meanflow.interchange.read_one_export`). ``DiffusionPipeline.from_pretrained``
        builds this class itself without coming here, so it reads without that check."""
        folder = str(pretrained_model_name_or_path)
        sets_backend = backend is not None
        if sets_backend:  # a typo refused before the folder is read
            backend = dispatch.check_backend(backend) or None
        pipe = read_one_export(folder, lambda: cls._read_folder(folder, vae, kwargs))
        if sets_backend:
            pipe.transformer.backend = backend
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def _read_folder(cls, folder: str, vae, kwargs: dict):
        """One read of ``folder``. ``kwargs`` is the caller's, left unchanged: a second read
        must not be handed the VAE the first one read from the replaced folder."""
        index_path = os.path.join(folder, cls.config_name)
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"{index_path} not found: not a MeanFlowPipeline directory (nothing is downloaded)"
            )
        index = read_json_object(index_path, "a pipeline index")
        # Diffusers reads a component whose subfolder is missing from the folder itself: its
        # error would name the wrong place, or another model lying there would load.
        if "transformer" not in kwargs and not os.path.isdir(os.path.join(folder, "transformer")):
            raise FileNotFoundError(
                f"{os.path.join(folder, 'transformer')} not found: a MeanFlowPipeline folder holds "
                "its DiT there (an interrupted copy? export it again)"
            )
        saved_vae = os.path.join(folder, "vae")
        names_vae = isinstance(index.get("vae"), list) and any(index["vae"])
        if vae is None and names_vae and not os.path.isdir(saved_vae):
            raise FileNotFoundError(
                f"{saved_vae} not found, though {index_path} names a vae: pass vae= (an AutoencoderKL, "
                "or a local folder or weights file) or copy the export whole"
            )
        given_vae = vae is not None
        if not given_vae and os.path.isdir(saved_vae):
            vae = saved_vae  # read strictly: diffusers would fill missing weights with random ones
        if isinstance(vae, str):
            vae = load_vae(vae, dtype=kwargs.get("dtype") or kwargs.get("torch_dtype"))
        options = {**kwargs, "vae": vae} if vae is not None else kwargs
        if given_vae and "shift_factor" not in index and "shift_factor" not in kwargs:
            # An export from before model_index.json held the shift: the saved VAE's config held
            # it, and decoded with it; another VAE given now must not bring its own. (The saved
            # VAE, read above from that config, brings that shift itself.)
            options = {**options, "shift_factor": _saved_vae_shift(saved_vae)}
        pipe = super().from_pretrained(folder, **options)
        for name in ("transformer", "vae"):
            if name not in options and getattr(pipe, name) is not None:
                # Loaded here for inference only; also the VAE picks its inference kernels then.
                getattr(pipe, name).requires_grad_(False)
        return pipe


def _latent_scaling_factor(transformer: DiT, vae, scaling_factor):
    """The latent scale to decode with; checks that ``vae`` fits the transformer's channels."""
    cfg = transformer.config
    if vae is not None:
        latent = getattr(vae.config, "latent_channels", None)
        if latent is not None and latent != cfg.in_channels:
            raise ValueError(f"vae has {latent} latent channels, the transformer {cfg.in_channels}")
        if scaling_factor is None:
            return _checked_number("the vae's scaling_factor", latent_scale(vae)[0], 0, above=True)
    elif needs_vae(cfg):
        raise ValueError(
            f"the transformer makes {cfg.in_channels}-channel latents: pass the vae that decodes them"
        )
    if scaling_factor is None:
        return SD_VAE_SCALE
    return _checked_number("scaling_factor", scaling_factor, 0, above=True)


def _latent_shift_factor(vae, shift_factor) -> float:
    """The latent shift to decode with: ``shift_factor``, else the VAE config's (0 for a VAE
    without one, and for a pixel model).

    Kept in ``model_index.json`` beside the scale, both those of the VAE whose latents the
    model learnt (``(z - shift) * scale``): ``from_pretrained(folder, vae=other)`` keeps the
    folder's scale and must keep its shift too. Taken from ``other``'s config, the shift of one
    VAE went with the scale of another: a shifted VAE (SD3's, FLUX's) given to the export of an
    unshifted one's model, or the reverse, decoded latents off by that shift, images that look
    washed out or tinted, with no error."""
    if shift_factor is None:
        shift_factor = latent_scale(vae)[1] if vae is not None else 0.0
    return _checked_number("shift_factor", shift_factor, minimum=None)


def _saved_vae_shift(saved_vae: str):
    """The ``shift_factor`` of a pipeline folder's ``vae/config.json`` (0 where it has none),
    None without that file (a pixel model's folder, or its VAE not copied: the VAE given then
    brings its own)."""
    path = os.path.join(saved_vae, "config.json")
    if not os.path.isfile(path):
        return None
    return read_json_object(path, "a VAE config").get("shift_factor") or 0.0


def _checked_number(name: str, value, minimum: float | None, above: bool = False) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name``: NaN passes every comparison
    test as False, so a bare ``value < minimum`` lets it through (and infinity) into images.
    ``minimum=None``: any finite number (a latent shift may be negative)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    finite = real and math.isfinite(value)
    if not (finite and (minimum is None or (value > minimum if above else value >= minimum))):
        bound = "" if minimum is None else f" {'>' if above else '>='} {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _check_latents(latents, shape: tuple) -> None:
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise TypeError(f"latents must be a float tensor of shape {shape}, got {type(latents).__name__}")
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape} (one per image), got {tuple(latents.shape)}")
    if not torch.isfinite(latents).all():
        raise ValueError("latents hold NaN or infinite values")


def _checked_id2label(id2label, num_classes: int) -> dict:
    """``{"id": "names"}`` as ``model_index.json`` holds it, ids in ``[0, num_classes)``."""
    if not id2label:
        return {}
    if not isinstance(id2label, dict):
        raise TypeError(f"id2label must be a dict {{class id: names}}, got {type(id2label).__name__}")
    ids = {}
    for key, value in id2label.items():
        if not str(key).isdigit() or int(key) >= num_classes or not isinstance(value, str):
            raise ValueError(
                f"id2label must map class ids in [0, {num_classes - 1}] to names, got {key!r}: {value!r}"
            )
        if int(key) in ids:  # "5" and "05": one class, two entries, one of them dropped
            raise ValueError(f"id2label names class {int(key)} twice (keys {str(int(key))!r} and {key!r})")
        ids[int(key)] = value
    return {str(k): ids[k] for k in sorted(ids)}


def _label_index(id2label: dict) -> tuple[dict, dict]:
    """``({name: id}, {ambiguous name: [ids]})``: each class is known by its whole
    ``id2label`` entry and by each of its comma-separated names."""
    ids = {}
    for key, value in id2label.items():
        for name in {value.strip(), *(part.strip() for part in value.split(","))} - {""}:
            ids.setdefault(name, set()).add(key)
    unique = {name: next(iter(keys)) for name, keys in sorted(ids.items()) if len(keys) == 1}
    ambiguous = {name: sorted(keys) for name, keys in ids.items() if len(keys) > 1}
    return unique, ambiguous


def _format_images(images: torch.Tensor, raw: torch.Tensor, output_type: str):
    if output_type == "latent":
        return raw
    if output_type == "pil":
        return [to_pil(a) for a in to_uint8(images)]
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return x.cpu().permute(0, 2, 3, 1).numpy() if output_type == "np" else x
