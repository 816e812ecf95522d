"""Packaging: what the Comfy Registry archive ships, and metadata that agrees with the README and the nodes."""
import fnmatch
import pathlib
import re
import subprocess
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def registry_archive():
    """The files the registry's publisher archives: git-tracked files minus .comfyignore matches."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    patterns = [p.strip() for p in (ROOT / ".comfyignore").read_text().splitlines() if p.strip() and p[0] != "#"]

    def ignored(path):
        return any(path.startswith(p) if p.endswith("/") else fnmatch.fnmatch(path, p) for p in patterns)
    return [f for f in tracked if f and not ignored(f)]


def test_registry_archive_ships_the_pack_only():
    files = registry_archive()
    assert "__init__.py" in files and "LICENSE" in files and "pyproject.toml" in files
    assert any(f.startswith("core/") for f in files) and any(f.startswith("nodes/") for f in files)
    assert any(f.startswith("workflows/") and f.endswith(".json") for f in files)
    assert any(f.startswith("example_inputs/") and f.endswith(".png") for f in files)
    assert not [f for f in files if f.split("/")[0] in {"tests", "scripts", "docs", ".ci"}]


def test_description_names_every_node():
    names = set()
    for path in (ROOT / "nodes").glob("*.py"):
        names |= set(re.findall(r'node_id="InversionSuite_\w+", display_name="([^"]+)"', path.read_text()))
    assert len(names) >= 8
    missing = [n for n in names if n not in PYPROJECT["project"]["description"]]
    assert not missing, f"pyproject description does not name {missing}"


def test_urls_agree_with_readme_and_icon_is_shipped():
    urls = PYPROJECT["project"]["urls"]
    repo = urls["Repository"]
    assert set(urls) >= {"Repository", "Documentation", "Issues"}
    assert all(u.startswith(repo) for u in urls.values())
    assert f"git clone {repo}" in (ROOT / "README.md").read_text()
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    owner_repo = repo.removeprefix("https://github.com/")
    assert icon.startswith(f"https://raw.githubusercontent.com/{owner_repo}/main/")
    assert (ROOT / icon.split("/main/", 1)[1]).is_file()


def test_test_extra_equals_requirements_dev():
    dev = [line.strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert sorted(PYPROJECT["project"]["optional-dependencies"]["test"]) == sorted(dev)


def test_classifiers_claim_only_what_is_tested():
    claimed = PYPROJECT["project"]["classifiers"]
    assert not [c for c in claimed if "GPU" in c or "CUDA" in c or "Windows" in c or "MacOS" in c]
