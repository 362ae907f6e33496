"""Export a model for sharing: config JSON + safetensors, optionally a whole pipeline folder.

    python -m meanflow.export --ckpt runs/in256/last.pt --out exported/ --ema 0
    python -m meanflow.export --ckpt runs/in256/last.pt --out pipe/ --pipeline --vae /models/sd-vae-ft-ema
    python -m meanflow.export --ckpt DiT-XL-2-256x256.pt --official-dit --out dit-init/
    python -m meanflow.export --ckpt SiT-XL-2-256x256.pt --official-sit --out sit-init/

``--ema N`` picks the N-th EMA of a trainer checkpoint (``ema_decays`` order; default 0),
``--raw`` the raw weights; a pretrained directory as ``--ckpt`` holds one set, so ``--raw`` or
``--ema N > 0`` there is refused, and with ``--official-*`` (before the checkpoint is read).
``--official-dit`` / ``--official-sit`` convert a facebookresearch/DiT or willisma/SiT
checkpoint into the official network in our time convention (sigma channels dropped, MeanFlow's
second time embedder starting with a zero output; docs/design.md section 7) -- a starting point
for fine-tuning, not a MeanFlow sampler; a MeanFlow checkpoint or export given to them is
refused (it has a second time embedder, which no official network has). The output directory
appears only once complete (``DiT.from_pretrained`` / ``MeanFlowPipeline.from_pretrained`` read
it). A ``--pipeline`` folder names the classes (``id2label``) after the run's data, as the
checkpoint recorded them (an older one: as the data says now): the latent manifest's synsets
(with ImageNet's readable names where they are the standard 1000), an image folder's class
folders, MNIST's digits; an official DiT gets ImageNet's names.
``--out`` must be new, empty or an earlier export (``.meanflow_export.json`` lists
what it wrote): any other folder -- a training run, someone's model folder -- is refused,
never overwritten. An export that finds another one writing the same ``--out`` (its temporary
folder) is refused; two that start together, before either has made its temporary, each
publish whole and the last one's stays, as when they run one after the other.
"""

import argparse

from .cli import add_weights_options, errors_as_one_line, int_at_least
from .pretrained import from_official_dit, load_model


def export(ckpt, out, ema=0, official=None, num_heads=None, pipeline=False, vae=None, seed=0):
    """``official``: None (a trainer checkpoint or pretrained directory), "dit" or "sit"."""
    _refuse_unused_options(official, ema, pipeline, vae)
    if official:
        model = from_official_dit(ckpt, num_heads=num_heads, family=official, seed=seed)
    else:
        model = load_model(ckpt, ema=ema)
    if pipeline:
        from .pipeline import MeanFlowPipeline
        from .vae import load_vae, needs_vae

        if not vae and needs_vae(model.config):  # what MeanFlowPipeline refuses, in the CLI's words
            raise ValueError(
                f"--pipeline: the model makes {model.config.in_channels}-channel latents, not images: pass "
                "--vae, the VAE that decodes them (a local diffusers AutoencoderKL folder or weights file)"
            )

        id2label = pipeline_id2label(ckpt, model, official)
        decoder = load_vae(vae) if vae else None
        if decoder is not None and not official:  # the VAE the latents were made with
            from .data.latents import check_vae_for_checkpoint

            check_vae_for_checkpoint(decoder, ckpt, vae)
        MeanFlowPipeline(model, decoder, id2label=id2label).save_pretrained(out)
    else:
        model.save_pretrained(out)
    return model


def _refuse_unused_options(official, ema, pipeline: bool, vae) -> None:
    """Options that would be dropped without a word, refused before the checkpoint is read (an
    official one's conversion takes minutes)."""
    if official and ema != 0:
        which = "--raw" if ema is None else f"--ema {ema!r}"
        raise ValueError(
            f"{which}: --official-{official} converts the one weight set an official checkpoint "
            "holds (a training checkpoint's EMA); --ema/--raw pick among a trainer checkpoint's"
        )
    if not pipeline:
        if vae:
            raise ValueError("--vae goes with --pipeline")


def pipeline_id2label(ckpt, model, official=None) -> dict:
    """The class names of the model's labels: from the run's data for a trainer checkpoint,
    ImageNet's for an official DiT or SiT (trained on ImageNet-1k labels)."""
    from .class_names import checkpoint_id2label, imagenet_id2label

    if official:
        return imagenet_id2label() if model.config.num_classes == 1000 else {}
    return checkpoint_id2label(ckpt, model.config.num_classes)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m meanflow.export",
        description="Trainer checkpoint -> save_pretrained directory.",
        allow_abbrev=False,
    )
    p.add_argument(
        "--ckpt", required=True, help="trainer checkpoint, pretrained directory or official DiT file"
    )
    p.add_argument("--out", required=True, help="the directory to write (config.json + model.safetensors)")
    add_weights_options(p)
    official = p.add_mutually_exclusive_group()
    official.add_argument(
        "--official-dit",
        dest="official",
        action="store_const",
        const="dit",
        help="convert a facebookresearch/DiT checkpoint",
    )
    official.add_argument(
        "--official-sit",
        dest="official",
        action="store_const",
        const="sit",
        help="convert a willisma/SiT checkpoint (Linear path, velocity prediction)",
    )
    p.add_argument(
        "--num-heads",
        type=int_at_least(1),
        help="heads, for --official-* (default: the DiT preset's of the checkpoint's width)",
    )
    p.add_argument(
        "--pipeline", action="store_true", help="write a MeanFlowPipeline folder (model_index.json)"
    )
    p.add_argument(
        "--vae",
        help="with --pipeline: a local diffusers AutoencoderKL folder or weights file to include "
        "(default: none, for a pixel model)",
    )
    args = p.parse_args(argv)
    if args.num_heads is not None and not args.official:
        p.error(
            "argument --num-heads: only with --official-dit or --official-sit (a trainer checkpoint "
            "records its heads)"
        )
    with errors_as_one_line(p):
        model = export(
            args.ckpt,
            args.out,
            ema=None if args.raw else args.ema,
            official=args.official,
            num_heads=args.num_heads,
            pipeline=args.pipeline,
            vae=args.vae,
        )
    n = sum(t.numel() for t in model.state_dict().values())
    print(f"wrote {args.out}: {n / 1e6:.2f} M values")


if __name__ == "__main__":
    main()
