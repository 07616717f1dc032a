"""Reading and writing Darknet cfg text: text -> sections (with file:line) -> text."""
from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Entry, Section, parse_cfg, read_cfg
from darkcsp.config.writer import format_cfg, write_cfg

__all__ = ["Entry", "Section", "parse_cfg", "read_cfg", "format_cfg", "write_cfg", "Option",
           "OptionValues"]
