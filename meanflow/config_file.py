"""Reading a ``--config`` file of training keys (YAML or JSON): its syntax errors name the file
and the line, before any key is applied."""

import json
import os


def load_file(path: str) -> dict:
    """The mapping of config keys in a YAML or JSON file; a syntax error names the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config file {path!r} does not exist")
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ValueError(f"--config file {path!r} is not a text file") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ValueError(f"--config file {path!r} is not valid JSON ({where}): {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"--config file {path!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config file {path!r} must hold a mapping of config keys")
    return values
