"""retention.yaml (schema version 1): loaded and validated here and nowhere else.

fields.py holds the keys, one table per mapping; model.py the records they make (Config,
Policy, Destination); load.py the reading and the checks across keys; values.py durations,
sizes and path dates; reference.py the Markdown reference and the JSON Schema made from
the tables (scripts/config_reference.py writes them to docs/).
"""

from ops.config.fields import COMPRESSIONS, POLICY_KEYS
from ops.config.load import load_config
from ops.config.model import Config, Destination, Policy
from ops.config.values import NAME_RE, Duration, Size, compile_path_date, parse_duration, parse_size

__all__ = [
    "COMPRESSIONS",
    "NAME_RE",
    "POLICY_KEYS",
    "Config",
    "Destination",
    "Duration",
    "Policy",
    "Size",
    "compile_path_date",
    "load_config",
    "parse_duration",
    "parse_size",
]
