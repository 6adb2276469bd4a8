"""The code's shape (#28): no module of vaanet/ over 400 lines, no function over 10 parameters, imports only down
the declared layers (tools/code_shape.py, read with ast: nothing is imported or run), and the checker itself
catches each kind of break, shown on small fake packages."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_code_shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("code_shape", module)
    spec.loader.exec_module(module)
    return module


cs = _load_code_shape()


def test_no_module_over_the_limit():
    long = {rel: n for rel, n in cs.module_lines(ROOT, ["vaanet"]).items() if n > cs.MAX_MODULE_LINES}
    assert not long, f"modules over {cs.MAX_MODULE_LINES} lines (split them by concept): {long}"


def test_no_function_over_the_parameter_limit():
    many = [f for f in cs.parameter_counts(ROOT) if f[3] > cs.MAX_PARAMETERS]
    assert not many, f"functions over {cs.MAX_PARAMETERS} parameters (group them in a dataclass): {many}"


def test_imports_go_down_the_layers():
    assert not cs.unlayered(ROOT), "every module must be in a layer: add it to LAYERS in tools/code_shape.py"
    up = cs.upward_imports(ROOT)
    assert not up, "upward imports:\n" + "\n".join(f"{i.source}:{i.line} ({a}) -> {i.target} ({b})" for i, a, b in up)
    assert not cs.forbidden_imports(ROOT)
    assert not cs.import_cycles(ROOT)


def test_config_and_credentials_import_nothing_of_train_or_tune():
    for module in ("vaanet/config.py", "vaanet/credentials.py"):
        targets = {i.target for i in cs.imports(ROOT) if i.source == module}
        assert not {t for t in targets if t.startswith(("vaanet.train", "vaanet.tune"))}, (module, targets)
    assert not {i.target for i in cs.imports(ROOT) if i.source == "vaanet/credentials.py"}  # the very bottom


def test_the_printout_names_each_section(capsys):
    assert cs.main([str(ROOT)]) == 0
    out = capsys.readouterr().out
    for section in ("largest modules per package", "longest argument lists", "upward imports: 0",
                    "forbidden imports: 0", "import cycles: 0", "modules in no layer: 0"):
        assert section in out


# ---- the checker on a fake tree that breaks every rule ------------------------------------------------
@pytest.fixture
def broken(tmp_path):
    """A fake vaanet/ with: a 401-line module, an 11-parameter function (and a method whose self does not
    count), data importing train (module level) and tune (lazily), config importing train, a cycle between
    two train modules, and a module no layer names."""
    pkg = tmp_path / "vaanet"
    for folder in ("data", "train", "tune"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "credentials.py").write_text("")
    (pkg / "config.py").write_text("from .train import loop\n")
    (pkg / "data" / "long.py").write_text("x = 1\n" * 401)
    (pkg / "data" / "ingest.py").write_text(
        "from ..train.loop import fit\n\n"
        "def prepare(a, b, c, d, e, f, g, h, i, j, *, k):\n    from vaanet.tune import study\n\n"
        "class Job:\n    def run(self, a, b, c, d, e, f, g, h, i, *args):\n        pass\n")
    (pkg / "train" / "loop.py").write_text("from . import state\n\ndef fit():\n    pass\n")
    (pkg / "train" / "state.py").write_text("def later():\n    from .loop import fit\n")
    (pkg / "tune" / "study.py").write_text("from ..train.loop import fit\n")
    (pkg / "stray.py").write_text("")
    return tmp_path


def test_the_checker_reports_each_break(broken):
    assert cs.module_lines(broken, ["vaanet"])["vaanet/data/long.py"] == 401
    counts = {name: n for name, _, _, n in cs.parameter_counts(broken, ["vaanet"])}
    assert counts["vaanet.data.ingest:prepare"] == 11  # keyword-only counts
    assert counts["vaanet.data.ingest:Job.run"] == 10  # self does not, *args does
    # imported modules as files: conftest's Ray detector reads test sources, and a dotted tune module name is a sign
    up = {(i.source, cs._file_of(i.target, broken), i.lazy, a, b)
          for i, a, b in cs.upward_imports(broken, packages=["vaanet"])}
    assert up == {("vaanet/data/ingest.py", "vaanet/train/loop.py", False, "data", "train"),
                  ("vaanet/data/ingest.py", "vaanet/tune/study.py", True, "data", "tune"),
                  ("vaanet/config.py", "vaanet/train/loop.py", False, "config", "train")}
    assert [(i.source, i.target) for i in cs.forbidden_imports(broken, packages=["vaanet"])] == \
        [("vaanet/config.py", "vaanet.train.loop")]
    assert cs.import_cycles(broken, ["vaanet"]) == [["vaanet.train.loop", "vaanet.train.state"]]
    assert cs.unlayered(broken, packages=["vaanet"]) == ["vaanet/stray.py"]
    report = cs.report(broken)
    assert "import cycles: 1" in report and "upward imports: 3" in report and "modules in no layer: 1" in report


def test_a_lazy_upward_import_is_reported_too(tmp_path):
    (tmp_path / "vaanet" / "tune").mkdir(parents=True)
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "report.py").write_text("")
    (tmp_path / "vaanet" / "tune" / "study.py").write_text("from analysis import report\n\ndef f():\n"
                                                            "    from analysis import report\n")
    got = [(i.source, i.lazy) for i, _, _ in cs.upward_imports(tmp_path)]
    assert sorted(got) == [("vaanet/tune/study.py", False), ("vaanet/tune/study.py", True)]  # inside a function too
