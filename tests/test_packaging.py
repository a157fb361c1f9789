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


def test_make_installs_setuptools_before_the_editable_install():
    # `--no-build-isolation` builds with the venv's own setuptools, and Python 3.12+ venvs have none.
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    editable = recipe.index("--no-build-isolation")
    needs = re.search(r'setuptools>=(\d+)', recipe[:editable])
    assert needs, "the Makefile must pip-install setuptools before the --no-build-isolation step"
    build = re.search(r'requires = \["setuptools>=(\d+)"\]', (ROOT / "pyproject.toml").read_text())
    assert int(needs.group(1)) >= int(build.group(1)), "the venv's setuptools must satisfy [build-system]"


def test_make_demo_installs_the_course_without_the_test_tools():
    # A classroom's laptops run `make demo`; pytest, nbval and playwright are for `make test`.
    make = (ROOT / "Makefile").read_text()
    course = make.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "-r requirements.txt" in course and "requirements-dev" not in course
    assert re.search(r"^demo: \$\(STAMP\)$", make, flags=re.M)
    assert re.search(r"^test: \$\(DEV_STAMP\)$", make, flags=re.M)
    assert "-r requirements-dev.txt" in make.split("$(DEV_STAMP):", 1)[1].split("\n\n", 1)[0]


def test_the_licence_pyproject_declares_ships_with_the_repo():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', text, flags=re.M)
    assert "MIT License" in (ROOT / "LICENSE").read_text()
