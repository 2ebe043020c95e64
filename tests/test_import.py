"""``import xception`` stays light: the public API resolves lazily, heavy libraries load on use.

torchvision (~1 s, and it imports triton), safetensors, matplotlib, scikit-learn and scipy are imported
inside the functions that need them, so the command line, data-loader workers and DDP processes
start quickly. Each check runs in a fresh interpreter: this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xception

HEAVY = ("torchvision", "safetensors", "triton", "matplotlib", "sklearn", "scipy")
# imported in this order in one fresh interpreter; each entry's heavy libraries are those loaded
# by then, so a light module listed after a heavy one would hide nothing of its own
MODULES = ("xception", "xception.models", "xception.weights", "xception.training.curves",
           "xception.experiments.plots")
_SCRIPT = """
import importlib, json, sys
out = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    out[name] = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def heavy_loaded() -> dict[str, list[str]]:
    """Module -> the heavy libraries in ``sys.modules`` once it (and those before it) imported."""
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(HEAVY), *MODULES],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_xception_loads_no_heavy_library(heavy_loaded):
    assert heavy_loaded["xception"] == []


@pytest.mark.parametrize("module", ["xception.models", "xception.weights"])
def test_subpackages_load_no_heavy_library(heavy_loaded, module):
    assert heavy_loaded[module] == []


@pytest.mark.parametrize("module", ["xception.training.curves", "xception.experiments.plots"])
def test_plot_modules_load_matplotlib_only_to_draw(heavy_loaded, module):
    assert "matplotlib" not in heavy_loaded[module]


def test_the_command_line_starts_without_heavy_libraries():
    """Building the ``xception`` parser (every subcommand registers) loads none of them: the main
    job's first progress line comes ~2 s sooner than with scipy (experiments' statistics)."""
    code = ("import json, sys; from xception.cli.main import build_parser; build_parser(); "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_api_resolves_lazily():
    from xception.fast import optimize_for_inference
    from xception.models.registry import create_model
    from xception.weights import load_model, load_weights, save_weights

    assert xception.create_model is create_model
    assert xception.load_weights is load_weights
    assert xception.load_model is load_model
    assert xception.save_weights is save_weights
    assert xception.optimize_for_inference is optimize_for_inference
    for name in xception.__all__:
        assert getattr(xception, name) is not None
    assert isinstance(xception.__version__, str)


def test_dir_lists_the_public_api():
    listed = dir(xception)
    for name in ("create_model", "load_weights", "load_model", "optimize_for_inference",
                 "fuse_model", "Xception", "WeightsError", "__version__"):
        assert name in listed
    assert set(xception.__all__) <= set(listed)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        xception.no_such_name  # noqa: B018
    assert not hasattr(xception, "no_such_name")
