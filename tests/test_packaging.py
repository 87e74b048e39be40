"""The wheel holds every package of the source tree: pyproject.toml lists packages explicitly
(kernels/ and benchmarks/ are mapped into toolken), so a new subpackage must be listed there."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {"toolken": ROOT / "toolken", **{k: ROOT / v for k, v in cfg["package-dir"].items()}}
    found = set()
    for name, folder in dirs.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


def test_the_checkouts_kernels_folder_does_not_shadow_hugging_faces_kernels():
    """`python -m ...` in the checkout's root puts the root on sys.path, where `kernels/` (installed
    as `toolken.kernels`) would shadow Hugging Face's `kernels` package, which transformers imports."""
    import subprocess
    import sys

    elsewhere = subprocess.run([sys.executable, "-c", "import importlib.util as u; s = u.find_spec('kernels'); "
                                "print(s.origin if s else '')"], cwd="/", capture_output=True, text=True)
    real = elsewhere.stdout.strip()
    probe = "import kernels; print(kernels.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    if real:
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.strip()).resolve() == Path(real).resolve()
    else:
        assert out.returncode != 0 and "toolken.kernels" in out.stderr
