"""The command line the prepare_latents fault tests share (a small tree, 2-image shards, the
CPU, no preview or progress bar)."""


def argv(src, dst, vae_config, *more):
    return [src, str(dst), "--vae", "random", "--vae-config", vae_config, "--image-size", "16",
            "--batch-size", "4", "--shard-size", "2", "--device", "cpu", "--workers", "0",
            "--scan-workers", "0", "--preview", "0", "--no-progress", *more]  # fmt: skip
