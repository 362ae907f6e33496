"""Argument checks the public functions share: each error names the argument and the value."""


def is_int(value) -> bool:
    """An int, not a bool: ``True`` passed for a count is a mistaken flag, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int_at_least(name: str, value, minimum: int = 1, why: str = "") -> None:
    """ValueError ``"<name> must be an int >= <minimum><why>, got <value>"`` unless ``value``
    is such an int."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{why}, got {value!r}")
