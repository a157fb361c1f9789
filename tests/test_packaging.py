import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return sorted(l.strip() for l in lines if l.strip() and not l.startswith("#"))


def test_environment_yml_installs_the_same_requirements():
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]  # the pip list is the file's last block
    pip_pkgs = sorted(l for l in re.findall(r"^\s+- (\S.*)$", pip_section, flags=re.M) if l != "-e .")
    assert pip_pkgs == _requirements()


def test_requirements_admit_the_pinned_torch():
    reqs = dict(re.match(r"([A-Za-z_\-]+)(.*)", r).groups() for r in _requirements())
    assert reqs["torch"].startswith(">=") and "==" not in "".join(reqs.values()), "floors only: users get newer releases"


def test_readme_names_the_make_targets_ci_calls():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
