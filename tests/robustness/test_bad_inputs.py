"""Bad inputs through the CLI: one line on stderr, the documented exit code, no traceback, nothing changed.

Each row names a command line built from a small run directory (and some broken files made
from it), the exit code and a part of the one error line. ``.lock`` is left out of the
comparison: a command that takes the run directory's lock records its pid there.
"""

import contextlib
import errno
import fcntl
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nascli.cli.app import app
from nascli.opt.checkpoint import FORMAT
from tests.stages.common import RECIPE, as_stage, convert

runner = CliRunner()


class _Shell:
    """What a malicious checkpoint pickles: a call of os.system when unpickled."""

    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("robustness")
    run = base / "run"
    other = base / "other"
    paths = {"base": base, "run": run, "convert": convert(run), "stale": base / "stale" / "convert.pt"}
    paths["train"] = as_stage(paths["convert"], run / "train.pt", "train")
    paths["unfinished"] = as_stage(paths["convert"], base / "killed" / "search.pt", "search", {"iteration": 1})
    paths["bogus"] = as_stage(paths["convert"], base / "bogus.pt", "bogus")
    convert(paths["stale"].parent)
    as_stage(convert(other, "model.kwargs.width=16"), paths["stale"].parent / "train.pt", "train")
    data = bytearray(paths["convert"].read_bytes())
    data[data.find(torch.load(paths["convert"])["state_dict"]["fc.weight"].numpy().tobytes()[:64]) + 3] ^= 1
    paths["flipped"] = base / "flipped.pt"
    paths["flipped"].write_bytes(bytes(data))
    paths["pickled"] = base / "pickled.pt"
    torch.save({"format": FORMAT, "x": Path("/")}, paths["pickled"])
    paths["malicious"] = base / "malicious.pt"
    torch.save({"format": FORMAT, "x": _Shell()}, paths["malicious"])
    paths["duplicate"] = base / "duplicate.yaml"
    paths["duplicate"].write_text(Path(RECIPE).read_text() + "seed: 3\nseed: 4\n")
    paths["truncated"] = base / "truncated.pt"
    paths["truncated"].write_bytes(paths["convert"].read_bytes()[: paths["convert"].stat().st_size // 2])
    paths["plain_pickle"] = base / "plain.pt"
    paths["plain_pickle"].write_bytes(pickle.dumps({"format": FORMAT}, protocol=4))
    paths["latin1"] = base / "latin1.yaml"
    paths["latin1"].write_bytes(Path(RECIPE).read_bytes() + "# caf\xe9\n".encode("latin-1"))
    paths["a_file"] = base / "a-file"
    paths["a_file"].write_text("not a directory\n")
    paths["finetune"] = as_stage(paths["convert"], base / "finetuned" / "finetune.pt", "finetune")
    paths["fashion"] = fashion_mnist(base / "fashion", damaged=False)
    paths["bad_fashion"] = fashion_mnist(base / "bad-fashion", damaged=True)
    paths["modules"] = user_modules(base / "modules")
    for name in ("raises_on_import", "exits"):
        paths[name] = base / f"{name}.yaml"
        recipe = Path(RECIPE).read_text().replace("nascli.models:resnet20", f"nascli_test_{name}:model")
        paths[name].write_text(recipe.replace("run_dir: runs/digits", f"run_dir: {base}/{name}-run"))
    return paths


def fashion_mnist(folder: Path, damaged: bool) -> Path:
    """Fashion-MNIST's four gzipped IDX files with a few samples; ``damaged``: the images truncated."""
    folder.mkdir()
    for prefix, count in (("train", 40), ("t10k", 10)):
        images = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28)) + bytes(count * 784)
        labels = b"\x00\x00\x08\x01" + count.to_bytes(4, "big") + bytes(i % 10 for i in range(count))
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images[: -100 if damaged else None]))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return folder


USER_MODULES = {
    "nascli_test_raises_on_import": "raise RuntimeError('no GPU driver')\n",
    "nascli_test_exits": "import sys\n\ndef model(**kwargs):\n    sys.exit(0)\n",
}


def user_modules(folder: Path) -> Path:
    """Model factory modules that misbehave, for recipes to name."""
    folder.mkdir()
    for name, code in USER_MODULES.items():
        (folder / f"{name}.py").write_text(code)
    return folder


@contextlib.contextmanager
def lock_held(files, monkeypatch):
    """Another process's lock on the run directory, as a running stage holds it."""
    with open(files["run"] / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


@contextlib.contextmanager
def disk_full(files, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    yield


@contextlib.contextmanager
def on_path(files, monkeypatch):
    """The misbehaving factory modules importable."""
    monkeypatch.syspath_prepend(str(files["modules"]))
    yield


def refused_before(target: str):
    """A context in which calling ``target`` fails loudly (exit 1): the row must be refused before it."""

    @contextlib.contextmanager
    def context(files, monkeypatch):
        def called(*args, **kwargs):
            raise AssertionError(f"{target} was called")

        monkeypatch.setattr(target, called)
        yield

    return context


nothing_built = refused_before("nascli.stages.convert.recipe_model")
no_torchrun = refused_before("nascli.cli.train.subprocess.run")


CASES = [
    # (id, command line, stdin, exit code, part of the error line, context during the command)
    ("duplicate-key", ["convert", "{duplicate}"], None, 2, "duplicate key 'seed'", None),
    ("missing-recipe", ["convert", "{base}/absent.yaml"], None, 2, "no such recipe file", None),
    ("unmet-constraint", ["profile", "{convert}", "--flops", "1"], None, 3, "flops cannot be met", None),
    ("bad-constraint", ["profile", "{convert}", "--flops", "banana"], None, 2, "constraint flops='banana'", None),
    ("finetune-convert", ["finetune", "{convert}"], None, 2, "nascli finetune takes search.pt", None),
    ("export-train", ["export", "{train}"], None, 2, "nascli export takes search.pt or finetune.pt", None),
    ("export-convert", ["export", "{convert}"], None, 2, "nascli export takes search.pt or finetune.pt", None),
    ("finetune-unfinished", ["finetune", "{unfinished}"], None, 2, "search unfinished: nascli search --resume", None),
    ("export-unfinished", ["export"], "{unfinished}\n", 2, "search unfinished: nascli search --resume", None),
    ("bogus-stage", ["profile", "{bogus}"], None, 2, "unknown stage 'bogus'", None),
    ("flipped-byte", ["profile", "{flipped}"], None, 2, "flipped.pt: damaged checkpoint", None),
    ("pickled-object", ["train", "{pickled}"], None, 2, "pickled object of type pathlib", None),
    ("malicious", ["search", "{malicious}"], None, 2, f"pickled object of type {os.system.__module__}.system", None),
    ("stale-resume", ["train", "{stale}", "--resume"], None, 2, "holds another model than the input", None),
    ("no-search-to-resume", ["search", "{train}", "--resume"], None, 2, "no unfinished search.pt", None),
    ("bad-format", ["export", "{convert}", "--format", "tflite"], None, 2, "expected one of pt2", None),
    ("no-input", ["search"], "", 2, "no input", None),
    ("run-dir-locked", ["train", "{convert}"], None, 2, "in use by another nascli run", lock_held),
    ("disk-full", ["convert", RECIPE, "run_dir={run}", "model.kwargs.width=8"], None, 1, "no space left", disk_full),
    ("infinite-constraint", ["profile", "{convert}", "--flops", "1e400"], None, 2, "must be a finite number", None),
    ("nan-constraint", ["profile", "{convert}", "--params", "nan"], None, 2, "must be a finite number", None),
    ("search-data-shape", ["search", "{train}", "data.name=fashion_mnist", "data.root={fashion}"], None, 2,
     "input_shape: [1, 8, 8] does not match the fashion_mnist samples [1, 28, 28]", None),
    ("truncated-nproc", ["train", "{truncated}", "--nproc", "2"], None, 2, "truncated.pt: not a readable checkpoint",
     no_torchrun),
    ("search-bad-latency", ["search", "{train}", "--latency", "5parsecs"], None, 2, "constraint latency='5parsecs'",
     nothing_built),
    ("search-bad-flops", ["search", "{train}", "--flops", "1e400"], None, 2, "must be a finite number", nothing_built),
    ("non-utf8-recipe", ["convert", "{latin1}"], None, 2, "latin1.yaml: not UTF-8 text (byte 0xe9", None),
    ("run-dir-is-a-file", ["convert", RECIPE, "run_dir={a_file}"], None, 2, "a-file is a file, not a directory", None),
    ("export-to-directory", ["export", "{convert}", "-o", "{base}"], None, 2, "a directory; give a file path", None),
    ("corrupt-fashion-mnist", ["search", "{train}", "data.name=fashion_mnist", "data.root={bad_fashion}"], None, 2,
     "train-images-idx3-ubyte.gz is damaged", None),
    ("factory-raises-on-import", ["convert", "{raises_on_import}"], None, 2,
     "importing module 'nascli_test_raises_on_import' raised RuntimeError: no GPU driver", on_path),
    ("train-finetuned", ["train", "{finetune}"], None, 2,
     "finetune.pt: a finetune checkpoint; nascli train takes convert.pt or train.pt", None),
    ("search-finetuned", ["search", "{finetune}"], None, 2, "finetune.pt: a finetune checkpoint; nascli search", None),
    ("profile-finetuned", ["profile", "{finetune}"], None, 2, "finetune.pt: a finetune checkpoint; nascli profile",
     None),
    ("plain-pickle", ["profile", "{plain_pickle}"], None, 2, "plain.pt: not a readable checkpoint", None),
    ("factory-exits", ["convert", "{exits}"], None, 2, "model factory 'model' called sys.exit(0)", on_path),
]  # fmt: skip


def snapshot(base: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``base`` but the locks: its content hash and modification time."""
    return {
        str(p.relative_to(base)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.parametrize(
    "name, args, stdin, code, message, during",
    [pytest.param(*case, id=case[0]) for case in CASES],
)
def test_a_bad_input_fails_cleanly(files, monkeypatch, name, args, stdin, code, message, during):
    args = [a.format(**files) for a in args]
    stdin = stdin.format(**files) if stdin is not None else None
    before = snapshot(files["base"])
    with during(files, monkeypatch) if during else contextlib.nullcontext():
        result = runner.invoke(app, ["-q", *args], input=stdin)
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception, so no traceback
    assert result.exit_code == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(files["base"]) == before


@pytest.mark.parametrize(
    "name", ["flipped-byte", "export-unfinished", "unmet-constraint", "plain-pickle", "truncated-nproc"]
)
def test_the_installed_command_fails_the_same_way(files, name):
    """The same rows through ``python -m nascli``, where an uncaught exception would print a traceback."""
    _, args, stdin, code, message, _ = next(case for case in CASES if case[0] == name)
    args = [a.format(**files) for a in args]
    stdin = stdin.format(**files) if stdin is not None else None
    done = subprocess.run([sys.executable, "-m", "nascli", "-q", *args], input=stdin, capture_output=True, text=True)
    assert done.returncode == code and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and message in done.stderr
