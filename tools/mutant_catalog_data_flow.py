"""The catalog's mutants of how training data flows to the ranks: the latent folder's index
and loaders, the sharding of an epoch over ranks, the loader factory's checks, and the
reference statistics of an evaluation. Each is a bug that trains or scores on other samples
than the ones meant (a rank's share, an epoch's order, a statistic of another set) without a
word."""

from mutant import Mutant

__all__ = ["DATA_FLOW_MUTANTS"]

T = "tests/meanflow/"
FLOW = f"{T}test_data_flow.py"
DATA = f"{T}test_data.py"
LATENTS = f"{T}test_data_latents.py"
INTEGRITY = f"{T}test_data_integrity.py"
PROVENANCE = f"{T}test_latent_provenance.py"
CHANGED = "tests/faults/test_fault_changed_latents.py"
REFERENCES = f"{T}test_evaluate_references.py"

_SHARD = "meanflow/data/sharding.py"
_LAT = "meanflow/data/latents.py"
_DATA = "meanflow/data/__init__.py"
_STATS = "meanflow/reference_stats.py"

DATA_FLOW_MUTANTS = [
    # ------------------------------------------------------------- meanflow/data/sharding.py
    Mutant(
        "flow-epoch-order-ignores-the-seed",
        _SHARD,
        "g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)",
        "g = torch.Generator().manual_seed(epoch)",
        (FLOW, DATA),
        "runs of every seed read the same order and flips: seeds differ in the model's noise only",
    ),
    Mutant(
        "flow-epoch-order-seed-plus-epoch",
        _SHARD,
        "g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)",
        "g = torch.Generator().manual_seed(self.seed + epoch)",
        (FLOW, DATA),
        "seed 1's first epoch is seed 0's second: two 'independent' runs share their orders",
    ),
    Mutant(
        "flow-rank-order-ignores-the-resume-position",
        _SHARD,
        "        mine = np.s_[start:, self.rank]",
        "        mine = np.s_[:, self.rank]",
        (DATA, FLOW),
        "a resumed run reads its epoch again from the first batch: the batches before the stop twice",
    ),
    Mutant(
        "flow-rank-flips-of-rank-0",
        _SHARD,
        "flips[:used].reshape(shape)[mine].reshape(-1)",
        "flips[:used].reshape(shape)[start:, 0].reshape(-1)",
        (FLOW, LATENTS),
        "every rank flips its samples as rank 0's: the flips depend on the rank count",
    ),
    Mutant(
        "flow-position-counted-after-the-batch-is-used",
        _SHARD,
        "                    self.position += 1  # counted when handed out, not when prefetched\n"
        "                    yield batch\n",
        "                    yield batch\n                    self.position += 1\n",
        (DATA, FLOW),
        "a checkpoint after batch k records position k-1: the resumed run trains on batch k again",
    ),
    Mutant(
        "flow-batch-stream-repeats-its-epoch",
        _SHARD,
        "                    yield indices[k * bs : (k + 1) * bs], flips[k * bs : (k + 1) * bs]\n"
        "            epoch, position = epoch + 1, 0\n",
        "                    yield indices[k * bs : (k + 1) * bs], flips[k * bs : (k + 1) * bs]\n"
        "            position = 0\n",
        (FLOW, LATENTS),
        "the torch loaders read their first epoch's order every epoch of a run",
    ),
    Mutant(
        "flow-resume-past-a-shorter-epoch-kept",
        _SHARD,
        "        if self.position > self.plan.batches_per_epoch:  # fewer batches per epoch than before",
        "        if False:",
        (FLOW,),
        "a resume onto a data set that shrank below the saved position fails mid-run in rank_order",
    ),
    Mutant(
        "flow-resume-onto-changed-data-unwarned",
        _SHARD,
        "        if n != self.num_samples:\n            import warnings\n",
        "        if False:\n            import warnings\n",
        (FLOW,),
        "a resume onto a data set of another size reads another order without a word",
    ),
    # -------------------------------------------------------------- meanflow/data/latents.py
    Mutant(
        "flow-latents-mean-mode-samples",
        _LAT,
        '        if self.latent_mode == "sample":',
        "        if True:",
        (LATENTS,),
        "data.latent_mode mean still adds the posterior's noise",
    ),
    Mutant(
        "flow-latents-sample-mode-gives-the-mean",
        _LAT,
        "    z = mean if noise is None else mean + std * noise",
        "    z = mean",
        (LATENTS,),
        "latent_mode sample trains on the posterior mean: the noise of the VAE's posterior is never drawn",
    ),
    Mutant(
        "flow-latents-std-read-as-log-variance",
        _LAT,
        "    z = mean if noise is None else mean + std * noise",
        "    z = mean if noise is None else mean + torch.exp(0.5 * std) * noise",
        (LATENTS,),
        "the stored std taken for a log-variance: samples about 1 away from the mean, not std",
    ),
    Mutant(
        "flow-latents-noise-added-after-scaling",
        _LAT,
        "    z = mean if noise is None else mean + std * noise\n    return (z - shift) * scale",
        "    z = (mean - shift) * scale\n    return z if noise is None else z + std * noise",
        (LATENTS,),
        "the posterior noise added at the VAE's scale, not the model's: 5x too much at 0.18215",
    ),
    Mutant(
        "flow-latents-mirror-flips-the-unflipped",
        _LAT,
        "moments = torch.where(flips.view(-1, 1, 1, 1, 1), moments[:, 0].flip(-1), moments[:, 0])",
        "moments = torch.where(flips.view(-1, 1, 1, 1, 1), moments[:, 0], moments[:, 0].flip(-1))",
        (LATENTS,),
        "the flip is applied to the other half of the batch: a sample's flip is not the plan's",
    ),
    Mutant(
        "flow-latents-stored-mirrors-never-taken",
        _LAT,
        "        moments = moments[torch.arange(len(moments), device=moments.device), flips.long()]",
        "        moments = moments[:, 0]",
        (LATENTS,),
        "--flips both latents never flipped: the mirror encodings prepare_latents paid for go unread",
    ),
    Mutant(
        "flow-latents-stored-mirrors-inverted",
        _LAT,
        "        moments = moments[torch.arange(len(moments), device=moments.device), flips.long()]",
        "        moments = moments[torch.arange(len(moments), device=moments.device), (~flips).long()]",
        (LATENTS,),
        "--flips both latents take the mirror where the plan says unflipped",
    ),
    Mutant(
        "flow-latents-noise-same-every-batch",
        _LAT,
        "g.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + batch) % 2**63)",
        "g.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)",
        (FLOW, LATENTS),
        "every batch of an epoch draws the same posterior noise: row i of each batch shares its eps",
    ),
    Mutant(
        "flow-latents-noise-ignores-the-seed",
        _LAT,
        "g.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + batch) % 2**63)",
        "g.manual_seed((epoch * 1_000_003 + batch) % 2**63)",
        (FLOW, LATENTS),
        "runs of every seed draw the same posterior noise",
    ),
    Mutant(
        "flow-latents-dali-noise-from-batch-0-on-resume",
        _LAT,
        "yield self._finish(moments, epoch, start + k, indices[part], flips[part])",
        "yield self._finish(moments, epoch, k, indices[part], flips[part])",
        (LATENTS,),
        "a DALI run resumed mid-epoch draws the noise of the epoch's first batches again",
    ),
    Mutant(
        "flow-latents-partial-folder-trained",
        _LAT,
        '        if len(done) < len(m["shards"]) and not allow_partial:',
        "        if False:",
        (LATENTS,),
        "training starts on a latent folder prepare_latents has not finished: a part of the data set",
    ),
    Mutant(
        "flow-latents-first-file-of-each-shard-skipped",
        _LAT,
        '            names = [f"{i:06d}.npy" for i in range(shard["count"])]',
        '            names = [f"{i:06d}.npy" for i in range(1, shard["count"])]',
        (LATENTS,),
        "each shard's first latent never read: every label after it shifted by one",
    ),
    Mutant(
        "flow-latents-identity-without-the-crop",
        _LAT,
        'made = {k: m.get(k) for k in ("reader", "image_size", "crop", "flips", "dtype")}',
        'made = {k: m.get(k) for k in ("reader", "image_size", "flips", "dtype")}',
        (FLOW, CHANGED),
        "a resume onto latents of other crops (ADM center crop vs resize) goes on, mixing the two",
    ),
    Mutant(
        "flow-latents-identity-vae-by-path",
        _LAT,
        '        return {k: record.get(k) for k in ("config", "sha256")}',
        '        return {k: record.get(k) for k in ("weights", "sha256")}',
        (FLOW, CHANGED),
        "a resume on a cluster whose VAE lies at another path is refused though the VAE is the same",
    ),
    Mutant(
        "flow-latents-identity-older-record-refused",
        _LAT,
        '        if k != "vae" and k in recorded and recorded[k] != now[k]',
        '        if k != "vae" and recorded.get(k) != now[k]',
        (FLOW, CHANGED),
        "a checkpoint from before a key was recorded cannot be resumed onto its own latents",
    ),
    Mutant(
        "flow-latents-shift-factor-ignored",
        _LAT,
        'float(m.get("shift_factor") or 0.0)',
        "0.0",
        (FLOW,),
        "a shifted VAE's latents (Flux, SD3) trained unshifted: off-centre inputs, in silence",
    ),
    Mutant(
        "flow-latents-scale-factor-of-sd",
        _LAT,
        'self.scale, self.shift = float(m["scale_factor"]),',
        "self.scale, self.shift = 0.18215,",
        (FLOW, LATENTS),
        "an SD3 VAE's latents (scale 1.5305) trained at SD's 0.18215: inputs 8x too small",
    ),
    Mutant(
        "flow-latents-mode-unchecked",
        _LAT,
        '        if latent_mode not in LATENT_MODES:\n            raise ValueError(f"latent_mode',
        '        if False:\n            raise ValueError(f"latent_mode',
        (LATENTS,),
        "data.latent_mode samples (a typo) trains on the posterior mean, in silence",
    ),
    # ------------------------------------------------------------- meanflow/data/__init__.py
    Mutant(
        "flow-data-latents-rank-takes-the-global-batch",
        _DATA,
        "        loader = TorchLatentLoader(root, config.batch_size // world_size, rank, world_size,",
        "        loader = TorchLatentLoader(root, config.batch_size, rank, world_size,",
        (FLOW,),
        "torch latents on 4 ranks read 4x the batch_size per step: another run than the one asked",
    ),
    Mutant(
        "flow-data-latents-seed-not-passed",
        _DATA,
        "    kwargs = dict(device=device, seed=config.seed, latent_mode=data.latent_mode, vae_path=data.vae,",
        "    kwargs = dict(device=device, latent_mode=data.latent_mode, vae_path=data.vae,",
        (FLOW,),
        "every latent run reads seed 0's order, flips and noise whatever its seed",
    ),
    Mutant(
        "flow-data-latent-mode-not-passed",
        _DATA,
        "    kwargs = dict(device=device, seed=config.seed, latent_mode=data.latent_mode, vae_path=data.vae,",
        "    kwargs = dict(device=device, seed=config.seed, vae_path=data.vae,",
        (FLOW, PROVENANCE),
        "data.latent_mode mean trains on posterior samples, while config.json says mean",
    ),
    Mutant(
        "flow-data-rank-lists-keep-the-root",
        _DATA,
        "check_same_samples(world_size, root, [f[len(index.root) + 1 :] for f in index.files], index.labels)",
        "check_same_samples(world_size, root, index.files, index.labels)",
        (INTEGRITY,),
        "ranks whose nodes hold the same latents at other paths are refused",
    ),
    Mutant(
        "flow-data-rank-lists-without-labels",
        _DATA,
        "    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())\n",
        "",
        (INTEGRITY,),
        "a node whose copy holds other labels for the same files trains its ranks on other classes",
    ),
    Mutant(
        "flow-data-rank-named-off-by-one",
        _DATA,
        "    other = next((r for r, listed in enumerate(lists) if listed != lists[0]), None)",
        "    other = next((r for r, listed in enumerate(lists[1:]) if listed != lists[0]), None)",
        (INTEGRITY,),
        "the refusal of ranks that read other data names the rank before the one whose copy differs",
    ),
    Mutant(
        "flow-data-left-out-warning-inverted",
        _DATA,
        "plan.left_out >= LEFT_OUT_WARNING * plan.num_samples:",
        "plan.left_out < LEFT_OUT_WARNING * plan.num_samples:",
        (INTEGRITY,),
        "a batch leaving 42% of the data set out of every epoch goes unsaid; one that reads all is warned",
    ),
    Mutant(
        "flow-data-left-out-warned-on-every-rank",
        _DATA,
        "    if rank == 0 and isinstance(plan, EpochPlan) and",
        "    if isinstance(plan, EpochPlan) and",
        (INTEGRITY,),
        "the left-out warning printed once per rank: 64 lines on 64 GPUs",
    ),
    Mutant(
        "flow-data-config-json-without-the-path",
        _DATA,
        'values["data"] = {k: v for k, v in values["data"].items() if k in ("name", "path", *read)}',
        'values["data"] = {k: v for k, v in values["data"].items() if k in ("name", *read)}',
        (PROVENANCE,),
        "a run's config.json does not say which folder it trained on",
    ),
    # ------------------------------------------------------------ meanflow/reference_stats.py
    Mutant(
        "flow-ref-stats-read-in-float32",
        _STATS,
        '    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}',
        '    return {"mu": mu.astype(np.float32), "sigma": sigma.astype(np.float32)}',
        (FLOW, REFERENCES),
        "FID against saved float64 statistics computed in float32: off in the third digit at 2048 dims",
    ),
    Mutant(
        "flow-ref-stats-sigma-shape-unchecked",
        _STATS,
        "d is None or sigma.shape != (d, d):",
        "d is None:",
        (FLOW,),
        "statistics holding a variance vector for sigma fail in the matrix square root, naming no file",
    ),
    Mutant(
        "flow-ref-stats-layer-unchecked",
        _STATS,
        "    differ = [k for k in RECORD if recorded[k] != current[k]]",
        '    differ = [k for k in RECORD if k != "feature_layer" and recorded[k] != current[k]]',
        (FLOW,),
        "statistics of another layer of the same extractor (logits, not pool3) taken as the reference",
    ),
    Mutant(
        "flow-ref-stats-crop-height-only",
        _STATS,
        "    if tuple(samples_size) == (crop, crop):\n        return",
        "    if samples_size[0] == crop:\n        return",
        (FLOW, REFERENCES),
        "256x512 samples scored against 256x256 center crops of the reference",
    ),
    Mutant(
        "flow-ref-stats-image-size-height-only",
        _STATS,
        "    if recorded is None or tuple(recorded) == tuple(samples_size):",
        "    if recorded is None or recorded[0] == samples_size[0]:",
        (FLOW, REFERENCES),
        "statistics of 256x256 images taken as the reference of 512x256 samples",
    ),
]
