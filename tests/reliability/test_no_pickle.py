"""No pickle, anywhere: a planted malicious pickle handed to every entry point that takes a model or weights
path is refused with a clear line and never runs, also with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``; ``.npz``
inputs load with ``allow_pickle=False``; and a lint fails on any unpickling call in ``src/``.

Guards: ``resolve_checkpoint``'s suffix check (``ldmkit/training/checkpoint.py``) and ``_safetensors_problem``'s
pickle/zip check (``ldmkit/training/files.py``, re-exported by checkpoint.py; every checkpoint entry point), the
suffix check and safetensors-only load of ``ldmkit/weights.py`` ``load_verified_safetensors`` (used by
``metrics.features.load_inception_extractor`` and ``autoencoders.perceptual.build_lpips_vgg``),
and ``np.load(..., allow_pickle=False)`` in ``metrics/evaluate.py`` and ``metrics/reference.py``; the lint
guards all of ``src/``.
"""

from __future__ import annotations

import ast
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _reliability_helpers import Planted, ae_checkpoint, diffusion_checkpoint, plant_pickle, sr_checkpoint

from ldmkit.cli import main
from ldmkit.images import save_png

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ldmkit"
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _torch_unsafe_default(monkeypatch):
    """torch's escape hatch that turns ``weights_only`` off for every ``torch.load``: must change nothing."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.mark.parametrize("torch_format", [False, True])
def test_the_planted_files_really_run_code_when_unpickled(tmp_path, torch_format):
    """The test files are real exploits: unpickling them (as ``torch.load`` with the variable above would)
    creates the marker. So a marker that never appears below means the files were never unpickled."""
    marker = tmp_path / "MARKER"
    path = plant_pickle(tmp_path / "evil.pt", marker, torch_format=torch_format)
    if torch_format:
        with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
            torch.load(path)  # honours TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: a full unpickle
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


# ------------------------------------------------------------------------------------- entry points
def _checkpoint_commands(path: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "sample": ["sample", path, "-n", "1", "--steps", "2", "--device", "cpu", "--npz", str(tmp / "s.npz")],
        "eval": ["eval", path, "-n", "2", "--steps", "2", "--metrics", "fid"],
        "nll": ["nll", path, "-n", "1", "--device", "cpu"],
        "info": ["info", path],
    }


def _evil_files(tmp: Path, marker: Path) -> dict[str, Path]:
    """Pickles named as model files (plain pickle and torch's zip), one per common suffix."""
    return {"pt": plant_pickle(tmp / "evil.pt", marker, torch_format=True),
            "ckpt": plant_pickle(tmp / "evil.ckpt", marker),
            "bin": plant_pickle(tmp / "evil.bin", marker, torch_format=True)}


# The refusals' own words (``resolve_checkpoint``, ``training/files.py``'s layout check, ``weights.py``); a bare
# "pickle" would also match the tests' temporary paths (``.../test_pickle_files_refused.../``).
REFUSED = re.compile(r"pickle checkpoints are not loaded|a pickle/zip file|is a pickle / torch\.save file")


def _assert_refused(code: int, capsys, marker: Path) -> str:
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert REFUSED.search(err) and "Traceback" not in err, err
    assert not marker.exists(), "the planted pickle ran"
    return err


@pytest.mark.parametrize("command", ["sample", "eval", "nll", "info"])
def test_pickle_files_refused_by_diffusion_commands(tmp_path, capsys, command):
    """Guards ``resolve_checkpoint``'s ``PICKLE_SUFFIXES`` check (a ``.pt``/``.ckpt``/``.bin`` path) and
    ``_safetensors_problem`` (a pickle renamed ``model.safetensors`` in a checkpoint folder) on the load paths
    of ``sample``, ``eval``, ``nll`` and ``info``."""
    marker = tmp_path / "MARKER"
    for path in _evil_files(tmp_path, marker).values():
        _assert_refused(main(_checkpoint_commands(str(path), tmp_path)[command]), capsys, marker)
    # a pickle inside an otherwise valid checkpoint folder, renamed to model.safetensors (plain and zip)
    for torch_format in (False, True):
        ckpt = diffusion_checkpoint(tmp_path, f"ckpt{torch_format}")
        plant_pickle(ckpt / "model.safetensors", marker, torch_format=torch_format)
        err = _assert_refused(main(_checkpoint_commands(str(ckpt), tmp_path)[command]), capsys, marker)
        assert "model.safetensors" in err


def test_pickle_files_refused_by_ae_stats_and_first_stage(tmp_path, capsys):
    """Guards ``autoencoders.checkpoint.load_autoencoder`` (-> ``resolve_checkpoint`` / ``_safetensors_problem``)
    as reached from ``ae-stats`` and ``train --first_stage=``; no training checkpoint is written."""
    marker = tmp_path / "MARKER"
    ae = ae_checkpoint(tmp_path)
    plant_pickle(ae / "model.safetensors", marker, torch_format=True)
    targets = [*_evil_files(tmp_path, marker).values(), ae]
    for path in targets:
        _assert_refused(main(["ae-stats", str(path), "--num-images", "2"]), capsys, marker)
        train = ["train", str(CONFIGS / "ldm_kl_f4_fmnist.yaml"), "--out", str(tmp_path / "ldm"),
                 f"--first_stage={path}", "--train.max_steps=1", "--no-progress"]
        _assert_refused(main(train), capsys, marker)
    assert not (tmp_path / "ldm" / "checkpoints").exists()


def test_pickle_refused_as_lpips_weights(tmp_path, capsys):
    """Guards ``weights.load_verified_safetensors`` (suffix and first-bytes checks) as called by
    ``autoencoders.perceptual.build_lpips_vgg`` for ``--loss.lpips_path``."""
    marker = tmp_path / "MARKER"
    renamed = plant_pickle(tmp_path / "lpips_vgg.safetensors", marker, torch_format=True)
    for path in [*_evil_files(tmp_path, marker).values(), renamed]:
        code = main(["train-ae", str(CONFIGS / "ae_kl_f4_fmnist.yaml"), "--out", str(tmp_path / "ae"),
                     "--loss.perceptual=lpips_vgg", f"--loss.lpips_path={path}", "--train.max_steps=1",
                     "--no-progress"])
        err = capsys.readouterr().err
        assert code in (1, 2) and str(path) in err and "Traceback" not in err, err
        assert not marker.exists()
    assert not (tmp_path / "ae" / "checkpoints").exists()


def _model_path_commands(path: str, tmp: Path) -> dict[str, list[str]]:
    """The commands added since the list above that take a model path or a shipped model's name."""
    return {
        "generate": ["generate", "a coat", "--model", path, "-n", "1", "--steps", "2", "--device", "cpu",
                     "--npz", str(tmp / "g.npz")],
        "visualize": ["visualize", path, "--what", "schedules", "-o", str(tmp / "v.png")],
        "serve": ["serve", "--no-demo", "--model", path, "--device", "cpu", "--port", "0"],
    }


@pytest.fixture
def no_serving(monkeypatch):
    """``serve`` loads every model before it starts uvicorn; if a refusal went missing, fail instead of serving."""
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started on a planted pickle"))


@pytest.mark.parametrize("command", ["generate", "visualize", "serve"])
def test_pickle_files_refused_by_generate_visualize_and_serve(tmp_path, capsys, no_serving, command):
    """Guards ``resolve_checkpoint`` (the ``PICKLE_SUFFIXES`` checks: a pickle file, and a folder holding only
    ``model.ckpt``) and ``_safetensors_problem`` (a pickle renamed ``model.safetensors``) on the paths of
    ``generate --model``, ``visualize CKPT`` and ``serve --model`` (``commands/serve.py`` ``model_sources``,
    which refuses a file through ``checkpoint_folder``, and its ``load_model`` before serving)."""
    marker = tmp_path / "MARKER"
    files = [*_evil_files(tmp_path, marker).values(), plant_pickle(tmp_path / "model.ckpt", marker)]
    only_ckpt = tmp_path / "run_with_a_pickle"
    plant_pickle(only_ckpt / "model.ckpt", marker, torch_format=True)
    for path in [*files, only_ckpt]:
        err = _assert_refused(main(_model_path_commands(str(path), tmp_path)[command]), capsys, marker)
        assert path.name in err, err
    for torch_format in (False, True):
        ckpt = diffusion_checkpoint(tmp_path, f"ckpt{torch_format}")
        plant_pickle(ckpt / "model.safetensors", marker, torch_format=torch_format)
        err = _assert_refused(main(_model_path_commands(str(ckpt), tmp_path)[command]), capsys, marker)
        assert "model.safetensors" in err
    assert not any((tmp_path / name).exists() for name in ("g.npz", "v.png"))


def _editing_commands(path: str, tmp: Path) -> dict[str, list[str]]:
    """The commands that take a checkpoint next to the user's images, and ``bench``."""
    image = str(save_png(tmp / "in.png", np.full((8, 8, 1), 90, np.uint8)))
    return {
        "img2img": ["img2img", path, image, "--strength", "0.5", "--steps", "2", "-o", str(tmp / "out")],
        "inpaint": ["inpaint", path, image, "--box", "0,0,4,4", "--steps", "2", "-o", str(tmp / "out" / "i.png")],
        "upscale": ["upscale", path, image, "-o", str(tmp / "out")],
        "bench": ["bench", path, "--train-steps", "1", "--warmup", "0", "--sample-n", "1", "--json"],
    }


@pytest.mark.parametrize("command", ["img2img", "inpaint", "upscale", "bench"])
def test_pickle_files_refused_by_img2img_inpaint_upscale_and_bench(tmp_path, capsys, command):
    """Guards ``resolve_checkpoint``'s ``PICKLE_SUFFIXES`` check and ``_safetensors_problem`` on the load paths
    of ``img2img``, ``inpaint``, ``upscale`` (``commands/_common.py`` ``load_checkpoint``) and ``bench``: each
    planted ``.pt`` / ``.ckpt`` / ``.bin`` file, a ``model.ckpt`` and a checkpoint whose ``model.safetensors``
    is a pickle (plain and zip; for ``upscale`` a super-resolution checkpoint, so the refusal cannot come from
    the model kind) is refused by name, nothing is written, the marker never appears."""
    marker = tmp_path / "MARKER"
    files = [*_evil_files(tmp_path, marker).values(), plant_pickle(tmp_path / "model.ckpt", marker)]
    for path in files:
        err = _assert_refused(main(_editing_commands(str(path), tmp_path)[command]), capsys, marker)
        assert path.name in err, err
    build = sr_checkpoint if command == "upscale" else diffusion_checkpoint
    for torch_format in (False, True):
        ckpt = build(tmp_path, f"ckpt{torch_format}")
        plant_pickle(ckpt / "model.safetensors", marker, torch_format=torch_format)
        err = _assert_refused(main(_editing_commands(str(ckpt), tmp_path)[command]), capsys, marker)
        assert "model.safetensors" in err, err
    assert not (tmp_path / "out").exists()


def test_pickle_refused_by_train_ldm_first_stage(tmp_path, capsys):
    """Guards ``commands/train_ldm.py`` ``_first_stage`` (``resolve_checkpoint``'s suffix check, whose reason
    it once dropped: "no autoencoder checkpoint there" without saying a pickle is never loaded) and the scale
    stage's ``load_autoencoder`` (``_safetensors_problem``) for an autoencoder folder whose weights are a
    pickle: ``train-ldm --first_stage`` exits 2 / 1 with the refusal, trains nothing, runs no pickle."""
    marker = tmp_path / "MARKER"
    ae = ae_checkpoint(tmp_path)
    plant_pickle(ae / "model.safetensors", marker, torch_format=True)
    for path in [*_evil_files(tmp_path, marker).values(), ae]:
        argv = ["train-ldm", str(CONFIGS / "ldm_fast_fmnist.yaml"), "--minutes", "1", "--out", str(tmp_path / "ldm"),
                f"--first_stage={path}", "--no-progress"]
        err = _assert_refused(main(argv), capsys, marker)
        assert (path.name if path.is_file() else "model.safetensors") in err, err
    assert not (tmp_path / "ldm" / "diffusion").exists()


def _sample_png(path: Path, checkpoint: Path) -> Path:
    """A one-image PNG as ``sample --out-dir`` writes it, whose ``checkpoint`` metadata names ``checkpoint``."""
    meta = {"checkpoint": str(checkpoint), "seed": "0", "sampler": "ddim", "steps": "2", "eta": "0.0",
            "guidance_scale": "1.0", "label": "null", "weights": "ema"}
    return save_png(path, np.full((8, 8, 1), 90, np.uint8), meta)


def test_pickle_named_by_a_png_is_refused_by_sample_from_png(tmp_path, capsys):
    """Guards ``settings_from_png`` (``commands/sample.py``: the stored ``checkpoint`` becomes the path to load)
    followed by the same ``resolve_checkpoint`` / ``_safetensors_problem`` checks: a PNG's metadata naming a
    ``.pt`` / ``.ckpt`` / ``.bin`` file or a checkpoint whose ``model.safetensors`` is a pickle is refused."""
    marker = tmp_path / "MARKER"
    ckpt = diffusion_checkpoint(tmp_path)
    plant_pickle(ckpt / "model.safetensors", marker, torch_format=True)
    for i, path in enumerate([*_evil_files(tmp_path, marker).values(), ckpt]):
        png = _sample_png(tmp_path / f"{i}.png", path)
        err = _assert_refused(main(["sample", "--from-png", str(png), "--device", "cpu",
                                    "--out-dir", str(tmp_path / "out")]), capsys, marker)
        assert (path.name if path.is_file() else "model.safetensors") in err, err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def planted_assets(tmp_path, monkeypatch):
    """The shipped models' folders (``ldmkit.zoo.ASSETS``) replaced by ones whose weights are planted pickles:
    the diffusion demo (``demo-ddpm-fmnist``) and the first stage (``fmnist-ae-kl-f4``)."""
    from ldmkit import zoo

    assets, marker = tmp_path / "assets", tmp_path / "MARKER"
    assets.mkdir()
    # an asset folder is a checkpoint folder itself (config.json at its top), as the shipped ones are
    demo = shutil.move(diffusion_checkpoint(tmp_path, "demo"), assets / zoo.SHIPPED["demo-ddpm-fmnist"][0])
    plant_pickle(demo / "model.safetensors", marker, torch_format=True)
    ae = shutil.move(ae_checkpoint(tmp_path, "ae"), assets / zoo.SHIPPED["fmnist-ae-kl-f4"][0])
    plant_pickle(ae / "model.safetensors", marker)
    monkeypatch.setattr(zoo, "ASSETS", assets)
    assert {"demo-ddpm-fmnist", "fmnist-ae-kl-f4"} <= set(zoo.available())
    return marker


def test_pickle_behind_a_shipped_model_name_is_refused(tmp_path, capsys, no_serving, planted_assets):
    """A registry name goes through ``zoo.resolve`` -> ``resolve_checkpoint`` -> the same safetensors-only
    load as a folder: guards that no name-resolution path (``sample``/``info``/``generate``/``visualize``,
    ``serve``'s default shipped list and ``--model NAME``, a first stage by name in ``ae-stats`` and
    ``train --first_stage=``) skips ``_safetensors_problem``'s pickle/zip check."""
    marker = planted_assets
    argvs = [*(_checkpoint_commands("demo-ddpm-fmnist", tmp_path)[c] for c in ("sample", "info")),
             *_model_path_commands("demo-ddpm-fmnist", tmp_path).values(),
             ["serve", "--device", "cpu", "--port", "0"],
             ["ae-stats", "fmnist-ae-kl-f4", "--num-images", "2"],
             ["train", str(CONFIGS / "ldm_kl_f4_fmnist.yaml"), "--out", str(tmp_path / "ldm"),
              "--first_stage=fmnist-ae-kl-f4", "--train.max_steps=1", "--no-progress"]]
    for argv in argvs:
        err = _assert_refused(main(argv), capsys, marker)
        assert "model.safetensors" in err, (argv, err)
    assert not (tmp_path / "ldm" / "checkpoints").exists()


def _images_npz(path: Path) -> Path:
    np.savez(path, images=np.zeros((4, 28, 28, 1), dtype=np.uint8))
    return path


def test_pickle_refused_as_inception_weights(tmp_path, capsys):
    """Guards ``weights.load_verified_safetensors`` as called by ``metrics.features.load_inception_extractor``
    for ``eval-images --inception-weights``."""
    marker = tmp_path / "MARKER"
    images = _images_npz(tmp_path / "images.npz")
    renamed = plant_pickle(tmp_path / "inception.safetensors", marker, torch_format=True)
    for path in [*_evil_files(tmp_path, marker).values(), tmp_path / "evil.pth", renamed]:
        if not path.exists():
            plant_pickle(path, marker)
        code = main(["eval-images", str(images), "--extractor", "inception-fid", "--inception-weights", str(path),
                     "--metrics", "fid", "--reference", str(images)])
        err = capsys.readouterr().err
        assert code in (1, 2) and str(path) in err and "Traceback" not in err, err
        assert not marker.exists()


@pytest.mark.parametrize("option", ["images", "reference"])
def test_object_array_npz_is_never_unpickled(tmp_path, capsys, option):
    """An ``.npz``/``.npy`` whose array is a pickled object (np.save pickles object arrays) is refused. Guards
    ``np.load(..., allow_pickle=False)`` in ``metrics/evaluate.py`` (images) and ``metrics/reference.py``
    (``--reference``)."""
    marker = tmp_path / "MARKER"
    evil = np.empty(1, dtype=object)
    evil[0] = Planted(marker)
    np.savez(tmp_path / "evil.npz", images=evil, features=evil, protocol_json=evil, mu=evil, sigma=evil)
    np.save(tmp_path / "evil.npy", evil)
    good = _images_npz(tmp_path / "good.npz")
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as z:  # proof that the file is an exploit
        z["images"]
    assert marker.exists()
    marker.unlink()
    for path in (tmp_path / "evil.npz", tmp_path / "evil.npy")[: 2 if option == "images" else 1]:
        args = [str(path), "--reference", str(good)] if option == "images" else [str(good), "--reference", str(path)]
        code = main(["eval-images", *args, "--metrics", "fid"])
        err = capsys.readouterr().err
        assert code in (1, 2) and "Traceback" not in err and ("pickle" in err or "Object arrays" in err), err
        assert not marker.exists()


# ------------------------------------------------------------------------------------------- lint
# Dotted names that unpickle (or fetch and unpickle), after import aliases are resolved.
FORBIDDEN_NAMES = {"torch.load", "torch.serialization.load", "torch.serialization._load", "torch.hub.load",
                   "torch.hub.load_state_dict_from_url", "pickle.load", "pickle.loads", "pickle.Unpickler",
                   "_pickle.load", "_pickle.loads", "_pickle.Unpickler", "joblib.load", "dill.load", "dill.loads",
                   "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "pandas.read_pickle"}
FORBIDDEN_MODULES = {"pickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
IMPORTERS = {"importlib.import_module", "__import__"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted module or object it stands for, from every import in the file (``import torch
    as th``: th -> torch; ``from torch import serialization``: serialization -> torch.serialization; ``from
    torch.serialization import load as ld``: ld -> torch.serialization.load). ``np`` means numpy by default."""
    names = {"np": "numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update({a.asname: a.name for a in node.names if a.asname})
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``th.serialization.load`` -> ``torch.serialization.load`` (the head resolved through ``aliases``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def unpickling_sites(source: str, filename: str = "<src>") -> list[str]:
    """Lines of ``source`` that unpickle or could: ``torch.load`` / ``torch.serialization.load`` /
    ``torch.hub.load*`` / ``pickle.load(s)`` and the like (``FORBIDDEN_NAMES``), called or referenced, under any
    import alias (``import torch as th; th.load``, ``from torch.serialization import load``) or through
    ``getattr(torch, "load")``; imports of pickle-like modules (also via ``importlib.import_module`` /
    ``__import__``); ``allow_pickle=True``, ``weights_only=False``, and ``numpy.load`` without an explicit
    ``allow_pickle=False``. Text inside strings (e.g. help that tells users how to convert a ``.pth`` file
    elsewhere) is not code and is not flagged."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Attribute, ast.Name)) and not isinstance(getattr(node, "ctx", None), ast.Store):
            name = _dotted(node, aliases)
            if name in FORBIDDEN_NAMES:
                found.append(f"{where}: {name}")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = {a.name for a in node.names}
            if node.module.split(".")[0] in FORBIDDEN_MODULES or any(f"{node.module}.{n}" in FORBIDDEN_NAMES
                                                                     for n in names):
                found.append(f"{where}: from {node.module} import {sorted(names)}")
        elif isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "weights_only"):
            value = node.value.value if isinstance(node.value, ast.Constant) else None
            if (node.arg == "allow_pickle" and value is not False) or (node.arg == "weights_only" and value is not True):
                found.append(f"{where}: {node.arg}={ast.unparse(node.value)}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func, aliases)
        first = node.args[0] if node.args else None
        second = node.args[1] if len(node.args) > 1 else None
        if func == "numpy.load" and not any(k.arg == "allow_pickle" for k in node.keywords):
            found.append(f"{where}: np.load without allow_pickle=False")
        elif func == "getattr" and isinstance(second, ast.Constant) and isinstance(second.value, str) \
                and f"{_dotted(first, aliases)}.{second.value}" in FORBIDDEN_NAMES:
            found.append(f"{where}: getattr({_dotted(first, aliases)}, {second.value!r})")
        elif func in IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str) \
                and first.value.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where}: {func}({first.value!r})")
    return found


def test_lint_catches_each_forbidden_form():
    """The lint itself can fail: every form is caught, aliased or not, and the same words inside a string, other
    modules' ``load`` and torch's safe calls are not."""
    bad = ["torch.load(f)", "pickle.load(f)", "pickle.loads(b)", "from torch import load", "import pickle",
           "np.load(f, allow_pickle=True)", "np.load(f)", "torch.load(f, weights_only=False)", "x = torch.load",
           # aliased forms
           "import torch as th\nth.load(f)", "torch.serialization.load(f)", "from torch.serialization import load",
           "from torch.serialization import load as ld\nld(f)", "from torch import serialization\nserialization.load(f)",
           "import torch.serialization as ts\nts.load(f)", "import torch as th\nth.serialization.load(f)",
           "from torch import load as safe_load\nsafe_load(f)", "import numpy\nnumpy.load(f)",
           "import numpy as xp\nxp.load(f)", "from numpy import load\nload(f)", "import pickle as pk",
           "torch.hub.load_state_dict_from_url(u)", "getattr(torch, 'load')(f)", "import torch as th\ngetattr(th, 'load')",
           "importlib.import_module('pickle')", "__import__('dill')", "import pandas as pd\npd.read_pickle(f)"]
    for source in bad:
        assert unpickling_sites(source), source
    fine = ['HELP = "torch.load(path, weights_only=True)"\nnp.load(f, allow_pickle=False)',
            "import torch as th\nth.save(x, f)\nth.serialization.add_safe_globals([])",
            "from ldmkit.training.checkpoint import load_checkpoint_config\nload_checkpoint_config(p)",
            "from safetensors.torch import load_file\nload_file(p)", "self.load(f)\nload = 3",
            "import numpy as xp\nxp.load(f, allow_pickle=False)", "getattr(torch, 'save')",
            "importlib.import_module('ldmkit.pipelines')"]
    for source in fine:
        assert not unpickling_sites(source), (source, unpickling_sites(source))


def test_no_unpickling_anywhere_in_src():
    """Guards every file of ``src/ldmkit`` against an unpickling call (see ``unpickling_sites``)."""
    found = [site for path in sorted(SRC.rglob("*.py"))
             for site in unpickling_sites(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "unpickling code in src/ (ldmkit never loads pickle):\n" + "\n".join(found)
