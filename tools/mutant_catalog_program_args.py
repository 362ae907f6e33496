"""The catalog's mutants of the programs' command lines (generate, prepare_latents, export,
evaluate, sample). Each is a bug that lets a program run on an argument it should refuse, or
names the wrong one."""

from mutant import Mutant

__all__ = ["PROGRAM_ARG_MUTANTS"]

_PREP = "meanflow/prepare_latents.py"
_GEN = "meanflow/generate.py"
_OUT = "meanflow/generate_out.py"
_TYPES = "meanflow/cli.py"
_VAE = "meanflow/vae.py"
_ADAPTERS = "meanflow/adapters.py"
ARGS = "tests/meanflow/test_program_args.py::"
PREP_PARSE = f"{ARGS}test_prepare_latents_refuses_a_bad_number_at_parse_time_naming_its_flag"
GEN_PARSE = f"{ARGS}test_generate_names_the_flag_of_a_bad_number"
SHIFT_RECORDED = f"{ARGS}test_generate_manifest_records_the_vae_shift_it_decoded_with"
SHIFT_RESUMED = f"{ARGS}test_generate_refuses_to_resume_with_another_vae_shift"
PREP_FUNCTION = f"{ARGS}test_prepare_latents_function_refuses_negative_workers_before_anything_is_made"
BAD_NUMBER = f"{ARGS}test_a_bad_number_is_refused_while_parsing_naming_its_flag"
RESUME_FLAG = f"{ARGS}test_generate_names_the_flag_of_a_setting_a_resume_changed"
PREP_FACTOR = (
    f"{ARGS}test_prepare_latents_names_image_size_not_a_multiple_of_the_vae_factor_before_loading_it"
)

PROGRAM_ARG_MUTANTS: list[Mutant] = [
    # ----------------------------------------------------------------------- meanflow/cli.py
    Mutant(
        "program-args-int-at-least-unchecked",
        _TYPES,
        "        if value < low:\n",
        "        if False:\n",
        (PREP_PARSE,),
        "every parse-time bound is gone: --workers -1 fails in DataLoader's words after the scan",
    ),
    Mutant(
        "program-args-ema-parsed-as-any-int",
        _TYPES,
        "        type=int_at_least(0),\n        default=0,",
        "        type=int,\n        default=0,",
        ("tests/meanflow/test_cli_help.py::test_an_option_that_would_do_nothing_is_a_usage_error",),
        "--ema -1 passes the command line and is refused by the loader as ema=-1, a name never typed",
    ),
    # ------------------------------------------------------------ meanflow/prepare_latents.py
    Mutant(
        "program-args-prepare-workers-parsed-as-any-int",
        _PREP,
        '"--workers", type=int_at_least(0),',
        '"--workers", type=int,',
        (PREP_PARSE,),
        "--workers -1 is refused by DataLoader (num_workers) after the VAE load and the scan",
    ),
    Mutant(
        "program-args-prepare-scan-workers-parsed-as-any-int",
        _PREP,
        '        "--scan-workers",\n        type=int_at_least(0),',
        '        "--scan-workers",\n        type=int,',
        (PREP_PARSE,),
        "--scan-workers -1 scans in one process, in silence",
    ),
    Mutant(
        "program-args-prepare-preview-parsed-as-any-int",
        _PREP,
        '"--preview", type=int_at_least(0),',
        '"--preview", type=int,',
        (PREP_PARSE,),
        "--preview -1 is refused as preview (the keyword), not --preview",
    ),
    Mutant(
        "program-args-prepare-function-workers-unchecked",
        _PREP,
        '        ("num_workers", num_workers, 0),  # else refused by DataLoader after the scan\n',
        "",
        (PREP_FUNCTION,),
        "prepare_latents(num_workers=-1) fails in DataLoader after the VAE load and the scan",
    ),
    Mutant(
        "program-args-prepare-function-scan-workers-unchecked",
        _PREP,
        '        ("scan_workers", 0 if scan_workers is None else scan_workers, 0),',
        '        ("scan_workers", 0, 0),',
        (PREP_FUNCTION,),
        "prepare_latents(scan_workers=-1) scans in one process, in silence",
    ),
    Mutant(
        "program-args-prepare-image-size-factor-checked-after-the-vae-load",
        _PREP,
        "    _refuse_image_size_off_the_vae_factor(parser, args)\n",
        "",
        (PREP_FACTOR,),
        "--image-size 15 is refused as image_size, the keyword, after the VAE's weights are loaded",
    ),
    Mutant(
        "program-args-prepare-image-size-factor-of-the-default-vae-for-a-folder",
        _PREP,
        "        config = vae_config(args.vae if folder else args.vae_config)\n",
        "        config = vae_config(args.vae_config)\n",
        (f"{PREP_FACTOR}[folder]",),
        "a VAE folder's --image-size is checked against sd-vae-ft-ema's factor, not its own config's",
    ),
    # ------------------------------------------------------------------ meanflow/generate.py
    Mutant(
        "program-args-generate-num-samples-parsed-as-any-int",
        _GEN,
        '        dest="num",\n        type=int_at_least(1),',
        '        dest="num",\n        type=int,',
        (GEN_PARSE,),
        "--num-samples 0 is refused as 'num must be an int >= 1': a name the user never typed",
    ),
    Mutant(
        "program-args-generate-batch-size-parsed-as-any-int",
        _GEN,
        '        "--batch-size",\n        type=int_at_least(1),',
        '        "--batch-size",\n        type=int,',
        (GEN_PARSE,),
        "--batch-size -1 is refused as batch_size, run()'s keyword",
    ),
    Mutant(
        "program-args-generate-seed-parsed-as-any-int",
        _GEN,
        '        "--seed",\n        type=int_at_least(0),',
        '        "--seed",\n        type=int,',
        (GEN_PARSE,),
        "--seed -1 is refused as seed, run()'s keyword",
    ),
    # -------------------------------------------------------------- meanflow/generate_out.py
    Mutant(
        "program-args-generate-out-named-as-the-keyword",
        _OUT,
        'raise ValueError(f"--out {out} must be a directory',
        'raise ValueError(f"out {out} must be a directory',
        (f"{ARGS}test_generate_names_out_when_it_is_a_file",),
        "an --out that is a file is refused as 'out', a name the user never typed",
    ),
    Mutant(
        "program-args-generate-shift-not-recorded",
        _GEN,
        '"shift_factor": getattr(decoder.config, "shift_factor", None) if decoder is not None else None,',
        '"no_shift_factor": None,',
        (SHIFT_RECORDED,),
        "the manifest of an SD3/FLUX-VAE set holds no shift: a reader decodes its latents off by it",
    ),
    Mutant(
        "program-args-generate-shift-recorded-as-zero",
        _GEN,
        '"shift_factor": getattr(decoder.config, "shift_factor", None) if decoder is not None',
        '"shift_factor": 0.0 if decoder is not None',
        (SHIFT_RECORDED,),
        "a shifted VAE's set is recorded with shift 0",
    ),
    Mutant(
        "program-args-generate-shift-not-compared-on-resume",
        _OUT,
        '    "shift_factor",\n    "dtype",',
        '    "dtype",',
        (SHIFT_RESUMED,),
        "a resume with the VAE config's shift changed mixes two decodings of the latents in one set",
    ),
    Mutant(
        "program-args-generate-resume-names-manifest-keys",
        _OUT,
        '        f"{FLAG_OF_SETTING.get(k, k)}: {old.get(k)!r} there',
        '        f"{k}: {old.get(k)!r} there',
        (RESUME_FLAG,),
        "a refused resume names num: 2 there, 3 now: a key of the manifest, not --num-samples",
    ),
    Mutant(
        "program-args-generate-resume-flag-of-num-missing",
        _OUT,
        '    "num": "--num-samples",\n',
        "",
        (f"{ARGS}test_generate_names_a_flag_for_every_setting_a_resume_compares", RESUME_FLAG),
        "a setting without its flag is named by its manifest key",
    ),
    # --------------------------------------------------------------------- meanflow/vae.py
    Mutant(
        "program-args-random-vae-hides-a-folder-named-random",
        _VAE,
        "    if weights == RANDOM and os.path.lexists(RANDOM):\n",
        "    if weights == RANDOM and False:\n",
        (f"{ARGS}test_random_vae_is_refused_where_a_folder_named_random_exists",),
        "--vae random beside a user's ./random VAE folder encodes with random weights, in silence",
    ),
    # ---------------------------------------------------------------- meanflow/adapters.py
    Mutant(
        "program-args-diffusers-dit-any-z-size",
        _ADAPTERS,
        "        if tuple(z.shape[-2:]) != (size, size):\n",
        "        if False:\n",
        (
            "tests/meanflow/test_adapter_inputs.py"
            "::test_diffusers_dit_refuses_z_of_another_size_than_its_sample_size",
        ),
        "a DiffusersDiT made for 32x32 latents runs on 64x64 ones (a 512px set for a 256px model)",
    ),
    # ------------------------------ sampler, evaluate, export, eval_mnist: numbers parsed checked
    *(
        Mutant(
            f"program-args-{program.replace('_', '-')}-{flag[2:]}-parsed-as-any-int",
            f"meanflow/{program}.py",
            find,
            find.replace(bound, "int"),
            (f"{BAD_NUMBER}[{program}{flag}{value}]",),
            why,
        )
        for program, flag, value, find, bound, why in (
            (
                "sampler",
                "--steps",
                "0",
                '"--steps",\n        type=int_at_least(1),',
                "int_at_least(1)",
                "--steps 0 passes the command line and is refused in other words than the rest",
            ),
            (
                "sampler",
                "--per-class",
                "0",
                '"--per-class",\n        type=int_at_least(1),',
                "int_at_least(1)",
                "--per-class 0 passes the command line",
            ),
            (
                "sampler",
                "--batch-size",
                "0",
                '"--batch-size",\n        type=int_at_least(1),',
                "int_at_least(1)",
                "--batch-size 0 passes the command line",
            ),
            (
                "sampler",
                "--seed",
                "-1",
                '"--seed",\n        type=int_at_least(0),',
                "int_at_least(0)",
                "--seed -1 draws the grid of seed 2**64 - 1, in silence",
            ),
            (
                "evaluate",
                "--batch-size",
                "0",
                '"--batch-size", type=int_at_least(1),',
                "int_at_least(1)",
                "--batch-size 0 is refused as batch_size, the function's keyword",
            ),
            (
                "evaluate",
                "--ref-size",
                "0",
                'metavar="N",\n        type=int_at_least(1),',
                "int_at_least(1)",
                "--ref-size 0 passes the command line",
            ),
            (
                "export",
                "--num-heads",
                "0",
                '"--num-heads",\n        type=int_at_least(1),',
                "int_at_least(1)",
                "--num-heads 0 is refused as num_heads, the config's field, after the checkpoint is read",
            ),
            (
                "eval_mnist",
                "--samples",
                "1",
                "type=int_at_least(MIN_EVAL_SAMPLES),",
                "int_at_least(MIN_EVAL_SAMPLES)",
                "--samples 1 passes the command line: no covariance",
            ),
            (
                "eval_mnist",
                "--steps",
                "0",
                '"--steps", type=int_at_least(1),',
                "int_at_least(1)",
                "--steps 0 passes the command line",
            ),
            (
                "eval_mnist",
                "--seed",
                "-1",
                '"--seed", type=int_at_least(0),',
                "int_at_least(0)",
                "--seed -1 scores the samples of seed 2**64 - 1, in silence",
            ),
        )
    ),  # fmt: skip
    # ------------------------------------------------------------ every program's --help
    Mutant(
        "program-args-sampler-vae-help-hides-its-default",
        "meanflow/sampler.py",
        '"folder or weights file; default: none, for a pixel model)",',
        '"folder or weights file)",',
        ("tests/meanflow/test_cli_help.py::test_every_flag_with_a_default_says_it[sampler]",),
        "--help does not say what the program does without --vae",
    ),
    # ------------------------------------------------ every program's parser: no abbreviations
    *(
        Mutant(
            f"program-args-{program}-takes-a-prefix",
            f"meanflow/{program}.py",
            "        allow_abbrev=False,\n",
            "",
            (f"{ARGS}test_a_prefix_of_an_option_is_not_taken_for_it[meanflow.{program}]",),
            "a prefix of an option is taken for it: a later option of that prefix changes what an "
            "old command line means, in silence",
        )
        for program in ("generate", "prepare_latents", "export", "eval_mnist", "demo", "sampler", "evaluate")
    ),
]
