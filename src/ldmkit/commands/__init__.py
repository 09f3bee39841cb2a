"""Command modules of the ``ldmkit`` CLI, in the order ``ldmkit --help`` lists them.

Every module defines ``add_parser(subparsers, formatter_class)``; it must not import torch-heavy code
at module level beyond what ``ldmkit`` itself imports.
"""

from ldmkit.commands import data as _data

COMMAND_MODULES = [_data]
