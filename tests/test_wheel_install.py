"""The wheel ships the package data: card templates, Wyckoff tables, the default checkpoint with its code files.

Built offline from a copy of the sources (``pip wheel --no-build-isolation --no-index``), installed into a fresh
venv that borrows this environment's dependencies (a ``.pth`` line, which does not run the editable install's
finder), and checked from outside the checkout: a file left out of ``package-data`` shows up here, not on a
user's machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wyckoff_hf"
CHECK_SCRIPT = textwrap.dedent("""
    import json
    import sys
    from pathlib import Path

    import wyckoff_hf
    from wyckoff_hf.cards import render_model_card
    from wyckoff_hf.generation.jobs import DEFAULT_MODEL
    from wyckoff_hf.tokenization import WyckoffRepresentation

    root = Path(wyckoff_hf.__file__).parent
    summary = json.loads((DEFAULT_MODEL / "training_summary.json").read_text())
    print(json.dumps({
        "root": str(root),
        "files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        "card": render_model_card(summary, model_id="org/mp20-biternary"),
        "nacl": str(WyckoffRepresentation.from_sites(225, [("Cl", "b"), ("Na", "a")])),
    }))
""")


def _run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def test_installed_wheel_holds_the_package_data(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "wyckoff_hf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         tmp_path / "dist", source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("wyckoff_hf-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site_packages = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                              cwd=tmp_path).strip())
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    installed = json.loads(_run(python, "-c", CHECK_SCRIPT, cwd=tmp_path))
    assert Path(installed["root"]) == site_packages / "wyckoff_hf"
    shipped = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped - set(installed["files"]) == set()
    assert {"cards/templates/model_card.md", "cards/templates/dataset_card.md", "tokenization/wyckoff_tables.json",
            "pretrained/mp20-biternary/model.safetensors", "pretrained/mp20-biternary/generation_config.json",
            "modeling/sampling_wyckoff_transformer.py"} <= set(installed["files"])
    assert installed["card"].startswith("---\n") and "org/mp20-biternary" in installed["card"]
    assert installed["nacl"] == "Fm-3m (225): Na 4a, Cl 4b"
