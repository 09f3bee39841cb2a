"""Command modules of the ``ldmkit`` CLI, in the order ``ldmkit --help`` lists them.

Every module defines ``add_parser(subparsers, formatter_class)``; it must not import torch-heavy code
at module level beyond what ``ldmkit`` itself imports.
"""

from ldmkit.commands import ae_stats as _ae_stats
from ldmkit.commands import bench as _bench
from ldmkit.commands import data as _data
from ldmkit.commands import demo as _demo
from ldmkit.commands import eval as _eval
from ldmkit.commands import generate as _generate
from ldmkit.commands import img2img as _img2img
from ldmkit.commands import info as _info
from ldmkit.commands import inpaint as _inpaint
from ldmkit.commands import models as _models
from ldmkit.commands import nll as _nll
from ldmkit.commands import sample as _sample
from ldmkit.commands import schedule as _schedule
from ldmkit.commands import serve as _serve
from ldmkit.commands import train as _train
from ldmkit.commands import train_ae as _train_ae
from ldmkit.commands import train_ldm as _train_ldm
from ldmkit.commands import upscale as _upscale
from ldmkit.commands import visualize as _visualize

COMMAND_MODULES = [_demo, _generate, _models, _data, _train_ae, _ae_stats, _schedule, _train, _train_ldm, _sample, _inpaint, _img2img, _upscale, _visualize, _nll, _info, _eval, _bench, _serve]
