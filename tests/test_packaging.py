"""The wheel (a non-editable install) holds every data file the package opens, not only its Python modules."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]
# A data file the code opens beside its own module: Path(__file__).with_name("<file>") or .parent / "<file>".
OPENED = re.compile(r"""Path\(__file__\)(?:\.resolve\(\))?(?:\.with_name\(|\.parent\s*/\s*)["']([^"']+)["']""")


def repository_files() -> list[str]:
    """The repository's files as git sees them: tracked and new, ignored ones (caches, builds) left out."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


def data_files() -> set[str]:
    """Wheel paths of every non-Python file in the package and every file its modules open beside themselves."""
    files = {name for name in repository_files() if name.startswith("petseg/") and not name.endswith(".py")}
    for module in (REPO / "petseg").rglob("*.py"):
        files |= {str((module.parent / name).relative_to(REPO)) for name in OPENED.findall(module.read_text())}
    return files


def sources(folder: Path) -> Path:
    """A copy of the repository's files, so the build writes nothing into the working tree."""
    for name in repository_files():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, folder / name)
    return folder


def test_the_wheel_holds_every_data_file_the_code_opens(tmp_path):
    wanted = data_files()
    assert "petseg/report/paper_results.json" in wanted  # the finder sees the one the report opens
    # Without build isolation when this environment can build wheels itself (setuptools >= 70.1 has
    # bdist_wheel); otherwise pip fetches the backend pyproject.toml names, as `pip install` does.
    isolation = [] if tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1) else ["--no-build-isolation"]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w",
                            str(tmp_path / "dist"), str(sources(tmp_path / "src"))],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("petseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "petseg/report/paper.py" in names
    assert not wanted - names, f"missing from the wheel: {sorted(wanted - names)}"
