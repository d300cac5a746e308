"""How many of ModelOpt's own public-API unit tests pass on nascli with only the imports switched.

Copies the selected test files of NVIDIA/Model-Optimizer (and the `_test_utils` helper modules
they import) into a temporary directory, rewrites the import lines that name
`modelopt.torch.nas`, `modelopt.torch.prune` or `modelopt.torch.opt` to the nascli package of
the same name, runs pytest there and prints passed/failed per file and the total.

Nothing else in the copied files changes. Their other imports (ModelOpt's generic
`modelopt.torch.utils`, `torchprofile`) are what those tests need to run at all, so give a
directory holding them with `--site` (a `pip install --target DIR --no-deps
nvidia-modelopt==0.47.0 torchprofile==0.0.4` plus ModelOpt's small dependencies); without it,
files needing them count as failed. `--original` runs the same copies unchanged against
ModelOpt, to check the selection passes there.

Two fixtures of ModelOpt's conftest files read ModelOpt internals (its mode registry), so the
temporary directory gets a conftest of its own instead: `--run-manual` and the `manual` mark
(manual tests are skipped, as in ModelOpt) and `use_channel_div_4` (divisor 4 in the default
rules of both modes).

    python scripts/modelopt_api_tests.py [--repo PATH] [--site DIR] [--original] [-k EXPR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = Path("/work/.mirror/NVIDIA+Model-Optimizer/repo")

#: the 22 node ids of ModelOpt 0.47's tests/unit/torch/{nas,opt,prune} that pass on CPU under
#: ModelOpt itself and use its public nas/opt/prune API, with the cases each runs (35 in all,
#: ModelOpt's manual ones included: they run here)
SELECTED_IDS = {
    "tests/unit/torch/nas/test_full_algorithms_vision.py::test_searched_model_constraints": 3,
    "tests/unit/torch/nas/test_full_algorithms_vision.py::test_profile_same_max": 2,
    "tests/unit/torch/nas/test_full_algorithms_vision.py::test_profile_search_space": 2,
    "tests/unit/torch/nas/test_nas.py::test_automode": 1,
    "tests/unit/torch/nas/test_nas.py::test_set_auto_mode": 1,
    "tests/unit/torch/nas/test_nas.py::test_save_restore_whole": 8,
    "tests/unit/torch/nas/test_nas.py::test_warning_raised": 1,
    "tests/unit/torch/nas/test_nas_utils.py::test_flops": 3,
    "tests/unit/torch/prune/test_algorithms.py::test_pruning": 1,
    "tests/unit/torch/prune/test_fastnas_conversion.py::test_fastnas_search_space": 1,
    "tests/unit/torch/opt/test_chaining.py::test_chained_save_restore[mode0]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_chained_save_restore[mode1]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_chained_save_restore[mode2]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_chained_save_restore[mode3]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_invalid_chaining[mode0-error_msg0]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_invalid_chaining[mode1-error_msg1]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_model_like_initialization[autonas-True-False]": 1,
    "tests/unit/torch/opt/test_chaining.py::test_model_like_initialization[autonas-False-False]": 1,
    "tests/unit/torch/opt/test_load_modelopt_state.py::test_load_modelopt_state_valid": 1,
    "tests/unit/torch/opt/test_load_modelopt_state.py::test_load_modelopt_state_invalid_type": 1,
    "tests/unit/torch/opt/test_load_modelopt_state.py::test_load_modelopt_state_missing_keys": 1,
    "tests/unit/torch/opt/test_load_modelopt_state.py::test_load_modelopt_state_full_checkpoint": 1,
}
SELECTED = sorted({node.partition("::")[0] for node in SELECTED_IDS})

LEFT_OUT = {
    "tests/unit/torch/nas/modules/test_container.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/modules/test_conv.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/modules/test_linear.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/modules/test_mod_utils.py": "a private tensor-slicing helper",
    "tests/unit/torch/nas/modules/test_norm.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/plugins/test_torch_hooks.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/test_evaluate_constraints.py": "ConstraintsFunc on plain models, ModelOpt's flops unit",
    "tests/unit/torch/nas/test_latency_interpolator.py": "patches the internal ConstraintsFunc latency method",
    "tests/unit/torch/nas/test_registry.py": "ModelOpt's dynamic-module registry (DMRegistry)",
    "tests/unit/torch/nas/test_search_space.py": "ModelOpt's SearchSpace class and DMRegistry",
    "tests/unit/torch/nas/test_search_space_with_example_models.py": "ModelOpt's generate_search_space",
    "tests/unit/torch/nas/test_search_space_with_torchvision.py": "ModelOpt's generate_search_space",
    "tests/unit/torch/opt/plugins/test_diffusers_save_load.py": "diffusers plugin",
    "tests/unit/torch/opt/plugins/test_hf_patching.py": "Hugging Face plugin and quantization",
    "tests/unit/torch/opt/plugins/test_lr_config.py": "Hugging Face trainer plugin",
    "tests/unit/torch/opt/plugins/test_modelopt_arg_parser.py": "Hugging Face argument-parser plugin",
    "tests/unit/torch/opt/plugins/test_peft_save_load.py": "PEFT plugin",
    "tests/unit/torch/opt/plugins/test_transformers_save_load.py": "Hugging Face save/load plugin",
    "tests/unit/torch/opt/test_config.py": "sparsity config classes",
    "tests/unit/torch/opt/test_dynamic.py": "ModelOpt's DynamicModule base class",
    "tests/unit/torch/opt/test_mode_registry.py": "ModelOpt's mode registry",
}

_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)modelopt\.torch\.(nas|prune|opt)\b", re.M)
_HELPER = re.compile(r"^\s*(?:from|import)\s+(_test_utils(?:\.\w+)*)", re.M)

_CONFTEST = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--run-manual", action="store_true", default=False)


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-manual"):
        for item in items:
            if "manual" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="manual test"))


@pytest.fixture
def use_channel_div_4(monkeypatch):
    {divisor_patch}
"""

_DIVISOR_NASCLI = """import nascli.nas.config as config

    for mode in (config.AutoNASConfig, config.FastNASConfig):
        monkeypatch.setattr(mode, "channel_divisor", 4)"""

_DIVISOR_MODELOPT = """from modelopt.torch.opt.mode import _ModeRegistryCls

    for mode in ("fastnas", "autonas"):
        fields = _ModeRegistryCls.get_from_any(mode).config_class.model_fields
        for field in fields.values():
            for settings in field.default.values():
                for key in settings:
                    if "divisor" in key:
                        monkeypatch.setitem(settings, key, 4)"""


def git_show(repo: Path, path: str) -> str:
    """One file of ModelOpt's repository at HEAD (the mirror is a bare git directory)."""
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def helper_files(repo: Path, sources: list[str]) -> dict[str, str]:
    """Every `_test_utils` module the sources import, directly or through other helpers."""
    found: dict[str, str] = {}
    pending = list(sources)
    while pending:
        for module in _HELPER.findall(pending.pop()):
            parts = module.split(".")
            for end in range(len(parts), 0, -1):  # `from _test_utils.torch import misc` names a package
                path = "tests/" + "/".join(parts[:end]) + ".py"
                if path in found:
                    break
                try:
                    found[path] = git_show(repo, path)
                except subprocess.CalledProcessError:
                    continue
                pending.append(found[path])
                break
    return found


def rewrite(text: str) -> str:
    """Switch only the import lines of the three packages nascli mirrors."""
    return _IMPORT.sub(r"\1nascli.\2", text)


def stage(repo: Path, work: Path, original: bool) -> None:
    """Write the selected tests, their helpers and the conftest into ``work``."""
    tests = {path: git_show(repo, path) for path in SELECTED}
    files = {**tests, **helper_files(repo, list(tests.values()))}
    for path, text in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text if original else rewrite(text))
    patch = _DIVISOR_MODELOPT if original else _DIVISOR_NASCLI
    (work / "tests" / "conftest.py").write_text(_CONFTEST.format(divisor_patch=patch))
    (work / "pytest.ini").write_text("[pytest]\nmarkers =\n    manual: run with --run-manual\n")


def run_pytest(work: Path, site: list[Path], original: bool, keyword: str | None) -> list[Path]:
    """Run the selected node ids, one pytest process per file; returns the JUnit XML reports.

    One process per file, because pytest ends the whole session when a node id's file fails to
    import ("found no collectors"), which would count the other files' cases as not run.
    """
    paths = [work / "tests", *site] + ([] if original else [ROOT])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    env["NASCLI_CONFIG_DIR"] = str(work / "nascli-config")  # signing keys of this run, never the user's
    reports = []
    for index, path in enumerate(SELECTED):
        report = work / f"report-{index}.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-manual"]
        command += [f"--junitxml={report}", *(i for i in SELECTED_IDS if i.startswith(f"{path}::"))]
        if keyword:
            command += ["-k", keyword]
        subprocess.run(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reports.append(report)
    return reports


def last_line(text: str | None) -> str:
    """The line of a pytest failure that says what went wrong, shortened for the table."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


def selected_id(file: str, name: str) -> str | None:
    """The selected node id a test case of ``file`` belongs to (``name`` may add parameters)."""
    node = f"{file}::{name}"
    return next((i for i in SELECTED_IDS if node == i or node.startswith(f"{i}[")), None)


def tally(reports: list[Path]) -> dict[str, dict[str, int | str]]:
    """Passed, failed (errors included), skipped and manual (skipped as in ModelOpt's CI) per file,
    with the first failure's cause; a file that fails to import fails all its selected cases."""
    rows: dict[str, dict[str, int | str]] = {
        path: {"passed": 0, "failed": 0, "skipped": 0, "manual": 0, "first": ""} for path in SELECTED
    }
    cases = [case for report in reports if report.is_file() for case in ET.parse(report).iter("testcase")]
    for case in cases:
        module = case.get("classname") or case.get("name", "")  # a collection error names the module
        path = next((p for p in SELECTED if module.replace(".", "/") == p.removesuffix(".py")), None)
        if path is None:
            continue
        row = rows[path]
        problem = case.find("failure")
        problem = problem if problem is not None else case.find("error")
        if problem is not None and not case.get("classname"):
            row["failed"] += sum(n for i, n in SELECTED_IDS.items() if i.startswith(f"{path}::"))
            row["first"] = f"import: {last_line(problem.text).removeprefix('E').strip()}"
            continue
        if selected_id(path, case.get("name", "")) is None:
            continue
        if problem is not None:
            row["failed"] += 1
            if not row["first"]:
                row["first"] = f"{case.get('name')}: {last_line(problem.get('message'))}"
        elif (skipped := case.find("skipped")) is not None:
            row["manual" if "manual test" in (skipped.get("message") or "") else "skipped"] += 1
        else:
            row["passed"] += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="ModelOpt's git directory")
    parser.add_argument("--site", type=Path, action="append", default=[], help="extra import path for the tests")
    parser.add_argument("--original", action="store_true", help="run the copies unchanged, against ModelOpt")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, to look at a few tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelopt-api-tests-") as tmp:
        work = Path(tmp)
        stage(args.repo, work, args.original)
        rows = tally(run_pytest(work, args.site, args.original, args.keyword))
    table = Table("file", "passed", "failed", "skipped", "manual", "first failure")
    for path, row in rows.items():
        table.add_row(
            path.removeprefix("tests/unit/torch/"),
            *(str(row[k]) for k in ("passed", "failed", "skipped", "manual")),
            row["first"],
        )
    console = Console(width=200)
    console.print(table)
    passed = sum(int(r["passed"]) for r in rows.values())
    total = sum(int(r["passed"]) + int(r["failed"]) + int(r["skipped"]) for r in rows.values())  # manual ones left out
    console.print(f"{'ModelOpt' if args.original else 'nascli'}: {passed} of {total} passed")


if __name__ == "__main__":
    main()
