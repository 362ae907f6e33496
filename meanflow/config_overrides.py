"""Setting the keys of a dataclass config tree from a config file's mapping or the command line:
dotted keys (``loss.cfg_w``), each value read as its field's type, unknown keys named with
the closest known ones. A mapping given to a section or to a dict field (``model_kwargs``)
sets its entries one by one, so the keys it leaves out keep their values."""

import copy
import dataclasses
import difflib
import types
import typing

BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def leaf_fields(obj, prefix="") -> list:
    """``[(dotted key, its type hint)]`` of every field of a dataclass tree that is not itself
    a dataclass, in declaration order: the keys ``--key value`` and a config file set."""
    hints = typing.get_type_hints(type(obj))
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += leaf_fields(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, hints[f.name]))
    return out


def config_keys(obj) -> list:
    """The dotted keys of a dataclass tree (``loss.cfg_w``, ``model_kwargs``, ...)."""
    return [key for key, _ in leaf_fields(obj)]


def _unknown(key, obj, source):
    known = config_keys(obj)
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ValueError(f"unknown config key {key!r} (from {source}){hint} Known keys: {', '.join(known)}")


def _field_type(obj, name):
    """The type of field ``name``, ``None | X`` unwrapped to ``X`` (with whether None is allowed)."""
    kind = typing.get_type_hints(type(obj))[name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None)), True
    return kind, False


def _convert(key, kind, value, optional=False):
    """A string from the command line (or a value from a file) -> the field's type."""
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    if not isinstance(value, str):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
            return copy.deepcopy(value)  # never share a preset's list or dict
        if kind is list and isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]  # a file's ema_decays: 0.99, as --ema_decays 0.99 reads
        # YAML 1.1 reads on/off/yes/no as booleans: cuda_graphs: on arrives as True
        quote = (
            f" (YAML reads it as a boolean: quote the word, {key}: 'on')" if isinstance(value, bool) else ""
        )
        raise TypeError(f"config key {key!r} must be {kind.__name__}, got {value!r}{quote}")
    try:
        if kind is bool:
            if value.lower() not in BOOL_WORDS:
                raise ValueError(value)
            return BOOL_WORDS[value.lower()]
        if kind in (int, float, str):
            return kind(value)
        if kind is list:
            import yaml

            parsed = yaml.safe_load(value) if value.startswith("[") else value.split(",")
            return [_scalar(v) for v in parsed]
        if kind is dict:
            import yaml

            parsed = yaml.safe_load(value)
            if not isinstance(parsed, dict):
                raise ValueError(value)
            return parsed
    except ValueError:
        raise ValueError(f"config key {key!r}: cannot read {value!r} as {kind.__name__}") from None
    raise TypeError(f"config key {key!r} has an unsupported type {kind}")


def _scalar(v):
    """List items: numbers where they parse, else strings."""
    if not isinstance(v, str):
        return v
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v.strip()


def _entry(value):
    """A dict field's entry (``model_kwargs.time_scale``): read as YAML, and a number YAML 1.1
    leaves a string (``1e3``, ``1e-4``: no dot) made the number it is."""
    if isinstance(value, str):
        import yaml

        value = yaml.safe_load(value)
    return _scalar(value) if isinstance(value, str) else value


def set_key(config, key: str, value, source="command line"):
    """Set a dotted ``key`` on ``config`` (a dataclass tree); ``model_kwargs.x`` sets a dict entry."""
    obj, parts = config, key.split(".")
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(obj)}
        if part not in names:
            raise _unknown(key, config, source)
        current, last = getattr(obj, part), i == len(parts) - 1
        if dataclasses.is_dataclass(current):
            if last:
                if not isinstance(value, dict):
                    raise TypeError(f"config key {key!r} takes a mapping, got {value!r}")
                for sub, sub_value in value.items():
                    set_key(config, f"{key}.{sub}", sub_value, source)
                return
            obj = current
            continue
        kind, optional = _field_type(obj, part)
        if kind is dict:
            # the entries given join the preset's: a preset's model_kwargs.time_scale stays
            entries = {".".join(parts[i + 1 :]): value} if not last else _convert(key, kind, value, optional)
            if entries is not None:
                entries = {**(current or {}), **{k: _entry(v) for k, v in entries.items()}}
            setattr(obj, part, entries)
            return
        if not last:
            raise _unknown(key, config, source)
        setattr(obj, part, _convert(key, kind, value, optional))
        return


def apply(config, values: dict, source: str):
    for key, value in values.items():
        set_key(config, key, value, source)


def takes_a_bare_flag(config, key: str) -> bool:
    """Whether ``--key`` alone means true: a bool field or a dict field's entry. Any other key
    needs its value (``--out_dir --steps 5`` would otherwise train into a folder named true)."""
    obj, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if part not in {f.name for f in dataclasses.fields(obj)}:
            return True  # set_key names the unknown key
        current = getattr(obj, part)
        if dataclasses.is_dataclass(current):
            obj = current
            continue
        kind, _ = _field_type(obj, part)
        return kind is bool or (kind is dict and i < len(parts) - 1)
    return False


def apply_command_line(config, args: list) -> None:
    """``--key value``, ``--key=value`` and ``--flag`` (a bool key: true) in order."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; overrides are --key value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            elif takes_a_bare_flag(config, key):
                value = "true"  # a bare flag: --compile
            else:
                raise ValueError(f"--{key} needs a value: --{key} VALUE or --{key}=VALUE")
        set_key(config, key, value)
        i += 1
