"""The DiT interchange formats, with no model class in them: ``save_pretrained`` /
``from_pretrained`` directories (config JSON + safetensors) and official DiT / SiT state dicts,
as the ``PretrainedMixin`` methods every DiT has (the pattern of diffusers' ``ModelMixin``).

A pretrained directory holds ``config.json`` (the ``DiTConfig`` fields plus ``_class_name`` and
``_format_version``; a later format than ``FORMAT_VERSION`` is refused, not read as this one)
and ``model.safetensors`` -- the layout of a diffusers/transformers model folder, readable
without this package (any safetensors reader; the config is plain JSON).

Every loader checks the state dict against the model before loading: missing keys, unexpected
keys and shape mismatches are one ``ValueError`` that names them, never a half-loaded model.
Every writer builds the directory under a temporary name and renames it into place.
"""

import dataclasses
import json
import math
import os

import torch

from mfkernels.reference import timestep_frequencies

from .checkpoint import atomic_directory, load_safetensors, load_torch_file
from .checks import check_int_at_least
from .dit_config import PRESETS, DiTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- state dicts


def check_state_dict(model: torch.nn.Module, state: dict, source: str, ignore=()):
    """Raise one ``ValueError`` naming every missing key, unexpected key and shape mismatch of
    ``state`` against ``model`` (keys in ``ignore`` may be missing)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a state dict (name -> tensor)")
    want = model.state_dict()
    missing = sorted(set(want) - set(state) - set(ignore))
    unexpected = sorted(set(state) - set(want))
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(want[k].shape)} in the model"
        for k in sorted(set(want) & set(state))
        if state[k].shape != want[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_clip(unexpected)}")
    if shapes:
        problems.append("size mismatches: " + "; ".join(_clip(shapes)))
    if problems:
        raise ValueError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))


def _clip(items, n=8):
    return items if len(items) <= n else [*items[:n], f"... ({len(items) - n} more)"]


def config_from_dict(d: dict, source: str) -> DiTConfig:
    known = {f.name for f in dataclasses.fields(DiTConfig)}
    d = {k: v for k, v in d.items() if not k.startswith("_")}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{source}: unknown DiTConfig fields {unknown}; known: {sorted(known)}")
    return DiTConfig(**d)


# ------------------------------------------------------ official DiT / SiT files


def looks_like_official_dit(state) -> bool:
    inner = state.get("ema", state.get("model", state)) if isinstance(state, dict) else None
    return isinstance(inner, dict) and "x_embedder.proj.weight" in inner


def official_dit_state_dict(obj) -> dict:
    """The weights of an official DiT/SiT file: a bare state dict (released checkpoints) or a
    ``train.py`` checkpoint ``{"model", "ema", "opt", "args"}`` (the EMA then)."""
    if isinstance(obj, dict) and isinstance(obj.get("ema"), dict):
        return obj["ema"]
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    return obj


# The second time embedder's names (``DiT.second_time``): MeanFlow's, no official DiT/SiT has one.
SECOND_TIME_EMBEDDERS = ("h_embedder.", "r_embedder.")

# The time scale each family's weights were trained with (docs/design.md section 7): DiT's
# timesteps are 0..999, noisiest last, so ours at t is DiT at 1000 t; SiT feeds its time unscaled.
OFFICIAL_TIME_SCALES = {"dit": 1000.0, "sit": 1.0}


def convert_official_dit(state: dict, num_heads: int | None = None, family: str = "dit", **overrides):
    """``(config, state_dict)`` for our DiT from a facebookresearch/DiT (``family="dit"``) or
    willisma/SiT (``family="sit"``) state dict: the same parameter names; ``learn_sigma``
    checkpoints have ``2 C`` output channels, of which the sigma half is dropped. SiT's time and
    output conventions are folded into the weights (``_sit_to_our_convention``). MeanFlow's
    second time embedder has no counterpart: it is absent from the returned state dict. A label
    table without the null row (trained with ``class_dropout_prob=0``) needs ``num_classes=``
    given; the null row is then added."""
    overrides["time_scale"] = _official_time_scale(family, overrides.get("time_scale"))
    if not isinstance(state, dict) or "x_embedder.proj.weight" not in state:
        raise ValueError("not a DiT state dict: x_embedder.proj.weight is missing")
    ours = sorted({k.split(".")[0] for k in state if k.startswith(SECOND_TIME_EMBEDDERS)})
    if ours:
        # Loaded as official, its weights would pass the key check, its second time embedder
        # be silenced and its time scale replaced by the family's: another network, no error.
        raise ValueError(
            f"not an official DiT/SiT state dict: it holds {ours[0]}, MeanFlow's second time "
            "embedder, so it is a MeanFlow model's (a meanflow.train checkpoint or an export): load "
            "it with meanflow.pretrained.load_model (python -m meanflow.export without --official-*)"
        )
    for key in (
        "pos_embed",
        "final_layer.linear.weight",
        "final_layer.linear.bias",
        "t_embedder.mlp.0.weight",
        "blocks.0.mlp.fc1.weight",
    ):
        if key not in state:
            raise ValueError(f"not a DiT state dict: {key} is missing")
    w = state["x_embedder.proj.weight"]
    hidden, in_channels, patch = w.shape[0], w.shape[1], w.shape[2]
    tokens = state["pos_embed"].shape[-2]
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise ValueError(f"pos_embed has {tokens} positions, not a square grid")
    # A key that is no numbered block's is left to the key check (an unexpected key).
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    depth = 1 + max(int(n) for n in blocks if n.isdigit())
    table = state.get("y_embedder.embedding_table.weight")
    if num_heads is None:
        by_hidden = {h: n for (_, h, _, n) in PRESETS.values()}
        if hidden not in by_hidden:
            raise ValueError(f"hidden size {hidden} matches no DiT preset: pass num_heads")
        num_heads = by_hidden[hidden]
    derived = {
        "input_size": grid * patch,
        "patch_size": patch,
        "in_channels": in_channels,
        "hidden_size": hidden,
        "depth": depth,
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
        "num_classes": 0 if table is None else table.shape[0] - 1,
        "frequency_embedding_size": state["t_embedder.mlp.0.weight"].shape[1],
        "qk_norm": False,  # neither DiT nor SiT normalises q and k
    }
    derived["mlp_ratio"] = _ratio_giving_the_width(derived["mlp_ratio"], hidden)
    for name, value in overrides.items():
        no_null_row = name == "num_classes" and table is not None and value == table.shape[0]
        if name in derived and value != derived[name] and not no_null_row:
            raise ValueError(
                f"{name}={value!r} does not fit the checkpoint, whose weights give {name} "
                f"{derived[name]!r}: leave it out (it is read from the weights)"
            )
    config = DiTConfig(**{**derived, "num_heads": num_heads, **overrides})
    out = dict(state)
    lin_w, lin_b = state["final_layer.linear.weight"], state["final_layer.linear.bias"]
    out_channels = lin_w.shape[0] // (patch * patch)
    if out_channels == 2 * in_channels:
        # DiT's unpatchify reads each patch row as (p, p, C_out), channels fastest: keep the
        # first C of every pixel (the noise prediction), drop the sigma half.
        out["final_layer.linear.weight"] = lin_w.reshape(patch, patch, out_channels, hidden)[
            :, :, :in_channels
        ]
        out["final_layer.linear.weight"] = out["final_layer.linear.weight"].reshape(-1, hidden)
        out["final_layer.linear.bias"] = lin_b.reshape(patch, patch, out_channels)[
            :, :, :in_channels
        ].reshape(-1)
    elif out_channels != in_channels:
        raise ValueError(
            f"final_layer.linear has {out_channels} output channels per pixel; expected {in_channels} "
            f"or {2 * in_channels} (learn_sigma) for {in_channels} input channels"
        )
    if table is not None and table.shape[0] == config.num_classes:
        # Trained without class dropout: no null row; add one (DiT's init) for guidance training.
        null = torch.randn(1, hidden, generator=torch.Generator().manual_seed(0), dtype=table.dtype) * 0.02
        out["y_embedder.embedding_table.weight"] = torch.cat([table, null])
    if out["pos_embed"].dim() == 2:
        out["pos_embed"] = out["pos_embed"][None]
    if family == "sit":
        _sit_to_our_convention(out)
    return config, out


def _ratio_giving_the_width(ratio: float, hidden: int) -> float:
    """``ratio = width / hidden`` nudged up to the float whose ``int(hidden * ratio)`` (the MLP
    width DiT builds) is ``width`` again: the quotient can round one unit short (704 * (1920 /
    704) is 1919.99...), and the checkpoint's MLP would not fit the model built for it."""
    width = round(hidden * ratio)
    while int(hidden * ratio) < width:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _official_time_scale(family: str, requested: float | None) -> float:
    """The scale ``family``'s weights were trained with; another one asked for is an error, as
    it would silently give a different network."""
    if family not in OFFICIAL_TIME_SCALES:
        raise ValueError(f"family must be one of {tuple(OFFICIAL_TIME_SCALES)}, got {family!r}")
    time_scale = OFFICIAL_TIME_SCALES[family]
    if requested is not None and requested != time_scale:
        raise ValueError(
            f"time_scale {requested!r} does not fit {family!r} weights, which were trained with "
            f"time_scale {time_scale}"
        )
    return time_scale


def _sit_to_our_convention(state: dict):
    """SiT's path is ``x_s = s x + (1 - s) e`` (``s = 1`` is data) and it predicts ``x - e``;
    ours has ``t = 1`` as noise and predicts ``v = e - x`` (docs/design.md section 1). So ours
    must be ``u(z, t, t, y) = -SiT(z, 1 - t, y)``: the flip goes into the first time-MLP layer,
    the sign into the final linear."""
    state["t_embedder.mlp.0.weight"] = _reflect_time(state["t_embedder.mlp.0.weight"])
    state["final_layer.linear.weight"] = -state["final_layer.linear.weight"]
    state["final_layer.linear.bias"] = -state["final_layer.linear.bias"]


def _reflect_time(weight: torch.Tensor) -> torch.Tensor:
    """The weight ``W'`` with ``W' emb(t) = W emb(1 - t)`` for the sinusoidal ``emb`` (cos
    half, sin half): per frequency ``w``, ``cos(w - w t) = cos w cos wt + sin w sin wt`` and
    ``sin(w - w t) = sin w cos wt - cos w sin wt``, a fixed 2x2 map of ``emb(t)``. Computed in
    float64, rounded once, to float32 at least: a 16-bit checkpoint's weights are exact in the
    model's float32, the rotated ones would not be."""
    half = weight.shape[1] // 2
    freqs = timestep_frequencies(weight.shape[1], dtype=torch.float64)
    cos_w, sin_w = torch.cos(freqs), torch.sin(freqs)
    w = weight.double()
    on_cos, on_sin = w[:, :half], w[:, half : 2 * half]
    out = w.clone()  # an odd size's zero padding column keeps its weight
    out[:, :half] = on_cos * cos_w + on_sin * sin_w
    out[:, half : 2 * half] = on_cos * sin_w - on_sin * cos_w
    return out.to(torch.promote_types(weight.dtype, torch.float32))


def _read_official_file(path: str):
    """An official checkpoint file's contents: a safetensors file through safetensors (the
    torch releases this package supports before 2.14 cannot ``torch.load`` one), anything else
    through the weights-only unpickler. A folder is named as one."""
    if os.path.isdir(path):
        raise ValueError(
            f"DiT checkpoint {path!r} is a folder: an official DiT/SiT checkpoint is one file (a "
            "save_pretrained folder loads with DiT.from_pretrained)"
        )
    if path.endswith(".safetensors") and os.path.isfile(path):
        return load_safetensors(path, "DiT checkpoint")
    return load_torch_file(path, what="DiT checkpoint")


def _folder_identity(directory: str) -> tuple:
    """Which folder ``directory`` is now: an export puts a new one (a new inode) in its place.
    None where there is none (the read then says what is missing)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def read_one_export(directory: str, read):
    """``read()``, which opens files under ``directory`` by path one after another, made to
    return what one export wrote: an export swaps a whole new folder in
    (``meanflow.checkpoint.publish_directory``), so files read before and after the swap are two
    exports' and fit together silently when their shapes match. Read again while the folder was
    replaced meanwhile; a ValueError after three replacements in a row."""
    for _ in range(3):
        before = _folder_identity(directory)
        result = read()
        if _folder_identity(directory) == before:
            return result
    raise ValueError(f"{directory} was replaced while it was read, three times: read it once exports end")


PIPELINE_INDEX = "model_index.json"  # a MeanFlowPipeline folder's (meanflow.pipeline)


def read_json_object(path: str, kind: str, of: str = "") -> dict:
    """The JSON object in ``path`` (a ``kind`` of file, holding ``of``), or a ``ValueError``
    naming the file: cut short by an interrupted copy, not JSON, or not an object."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not valid JSON (cut short, or not {kind}): {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object{of}, got {type(raw).__name__}")
    return raw


def _read_config(path: str) -> dict:
    """A pretrained directory's ``config.json`` as a dict; one this reader cannot take (not a
    JSON object, or written by a later format) is a ``ValueError`` naming it."""
    raw = read_json_object(path, "a config", " of DiTConfig fields")
    version = raw.get("_format_version", FORMAT_VERSION)
    check_int_at_least(f"{path}: _format_version", version)
    if version > FORMAT_VERSION:
        # A later format may mean other weights under the same names: never read it as this one.
        raise ValueError(
            f"{path} is in pretrained format {version}, written by a newer meanflow; this one "
            f"reads format {FORMAT_VERSION}: upgrade meanflow-engine"
        )
    return raw


# ------------------------------------------------------------------- the mixin


class PretrainedMixin:
    """``save_pretrained``, ``from_pretrained`` and ``from_official_dit`` for a model class built
    as ``cls(config: DiTConfig, backend=...)`` with a ``config`` attribute."""

    def save_pretrained(self, directory: str, state_dict: dict | None = None):
        """``directory/config.json`` + ``model.safetensors``: this model's config and weights (or
        ``state_dict``'s, checked against this model)."""
        from safetensors.torch import save_file

        state = self.state_dict() if state_dict is None else state_dict
        check_state_dict(self, state, "state_dict")
        config = {"_class_name": type(self).__name__, "_format_version": FORMAT_VERSION}
        config.update(dataclasses.asdict(self.config))
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        with atomic_directory(directory) as tmp:
            with open(os.path.join(tmp, CONFIG_NAME), "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
                f.write("\n")
            save_file(tensors, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str, device="cpu", dtype=None, backend=None):
        """The model saved by ``save_pretrained``, in eval mode: the config and the weights of one
        export, also while another export replaces the folder (it swaps the whole folder in,
        ``meanflow.checkpoint.publish_directory``: the files read before and after the swap would
        be two models' -- the new weights would load into the old config if the shapes match)."""
        model = read_one_export(directory, lambda: cls._read_pretrained(directory, backend))
        return model.to(device=device, dtype=dtype).eval()

    @classmethod
    def _read_pretrained(cls, directory: str, backend):
        directory = os.fspath(directory)
        if os.path.isfile(directory):
            raise ValueError(
                f"{directory} is a file, not a pretrained directory ({CONFIG_NAME} + {WEIGHTS_NAME}): "
                "a meanflow.train checkpoint loads with meanflow.pretrained.load_model, an official "
                "DiT/SiT file with DiT.from_official_dit"
            )
        config_path, weights_path = (os.path.join(directory, n) for n in (CONFIG_NAME, WEIGHTS_NAME))
        for p in (config_path, weights_path):
            if not os.path.isfile(p):
                hint = ""
                if os.path.isfile(os.path.join(directory, PIPELINE_INDEX)):
                    hint = (
                        f" ({directory} is a MeanFlowPipeline folder: its DiT is "
                        f"{os.path.join(directory, 'transformer')})"
                    )
                raise FileNotFoundError(
                    f"{p} not found: a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME}{hint}"
                )
        raw = _read_config(config_path)
        if raw.get("_class_name", cls.__name__) != cls.__name__:
            raise ValueError(f"{config_path}: _class_name is {raw['_class_name']!r}, not {cls.__name__!r}")
        model = cls(config_from_dict(raw, config_path), backend=backend)
        state = load_safetensors(weights_path, "model weights")
        check_state_dict(model, state, weights_path)
        model.load_state_dict(state)
        return model

    @classmethod
    def from_official_dit(
        cls, path_or_state, num_heads=None, device="cpu", backend=None, family="dit", seed=0, **overrides
    ):
        """The model holding the weights of an official DiT (``family="dit"``) or SiT (``"sit"``)
        checkpoint (file path or state dict), with the time scale those weights were trained with.
        At every ``(r, t)`` it computes the official network's field in our convention (DiT at
        ``1000 t``; ``-SiT(z, 1 - t, y)``): the second time embedder (``h_embedder``/``r_embedder``)
        starts with a zero output, as adaLN-Zero starts its blocks, and its input layer drawn
        from ``seed`` (the global RNG untouched), so every load fine-tunes from the same weights."""
        obj = path_or_state
        if isinstance(path_or_state, (str, os.PathLike)):
            obj = _read_official_file(os.fspath(path_or_state))
        state = official_dit_state_dict(obj)
        config, state = convert_official_dit(state, num_heads=num_heads, family=family, **overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config, backend=backend)
        fresh = [k for k in model.state_dict() if k.startswith(f"{model.second_time}_embedder.")]
        check_state_dict(model, state, "official DiT state dict", ignore=fresh)
        model.load_state_dict(state, strict=False)
        model._silence_second_time()
        return model.to(device).eval()

    def _silence_second_time(self):
        """Zero the second time embedder's output layer: a fresh one adds a nonzero vector to the
        conditioning even at h = 0, which moves the network off the official one. Its gradient is
        not zero, so training still moves it."""
        layer = self.second_embedder.mlp[2]
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()
