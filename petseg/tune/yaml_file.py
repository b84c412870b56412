"""Reading a config YAML file strictly: small UTF-8 text, no aliases, no duplicate keys.

A few hundred bytes of nested aliases expand into gigabytes ("billion laughs"), and a key given twice is
silently last-wins in plain YAML; a config never needs either, so both are refused with the line they are on.
"""
from __future__ import annotations

import yaml
from yaml.events import AliasEvent

from ..errors import ConfigError

MAX_BYTES = 1 << 20  # a config is a few hundred bytes; anything near this is not one


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (before anything expands) and keys given twice in one mapping."""

    def compose_node(self, parent, index):
        """Refuse an alias at the point it is read, so nothing it names is ever copied."""
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}) repeats other YAML; "
                                              "write the value out instead", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        """The mapping, or an error at the second occurrence of a key."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path) -> dict:
    """The mapping in YAML file `path` (a Path, or anything with read_bytes such as a storage Location; {} when
    empty), or a ConfigError naming the file and what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as err:  # a Location's errors (pyarrow's) carry their message, not a strerror
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"config file {path} is {len(raw):,} bytes; a config is a short YAML mapping "
                          f"(at most {MAX_BYTES:,} bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start} cannot be read); save it as "
                          "UTF-8 YAML") from err
    if "\x00" in text:
        raise ConfigError(f"config file {path} holds NUL bytes, so it is binary, not YAML; pass a YAML text file")
    try:
        values = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return values
