"""The catalog's mutants of the programs' command lines (generate, prepare_latents, export,
evaluate, sample). Each is a bug that lets a program run on an argument it should refuse, or
names the wrong one."""

from mutant import Mutant

__all__ = ["PROGRAM_ARG_MUTANTS"]

_PREP = "meanflow/prepare_latents.py"
_TYPES = "meanflow/cli_types.py"
ARGS = "tests/meanflow/test_program_args.py::"
PREP_PARSE = f"{ARGS}test_prepare_latents_refuses_a_bad_number_at_parse_time_naming_its_flag"
PREP_FUNCTION = f"{ARGS}test_prepare_latents_function_refuses_negative_workers_before_anything_is_made"

PROGRAM_ARG_MUTANTS: list[Mutant] = [
    # ----------------------------------------------------------------- meanflow/cli_types.py
    Mutant(
        "program-args-int-at-least-unchecked",
        _TYPES,
        "        if value < low:\n",
        "        if False:\n",
        (PREP_PARSE,),
        "every parse-time bound is gone: --workers -1 fails in DataLoader's words after the scan",
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
]
