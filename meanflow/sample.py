"""``python -m meanflow.sample``: the older name of ``python -m meanflow.generate``, kept so
existing commands run; new code imports ``meanflow.generate``.

``from meanflow import sample`` is the sampling function (``meanflow.sampler.sample``), not
this module. Importing this module binds the package attribute ``meanflow.sample`` to the
module (Python's import system does that for every submodule), hence the warning.
"""

import warnings

from meanflow.generate import main

if __name__ == "__main__":
    main()
else:
    warnings.warn(
        "the module meanflow.sample is now meanflow.generate; importing meanflow.sample rebinds "
        "the name meanflow.sample (the sampling function) to this module",
        DeprecationWarning,
        stacklevel=2,
    )
