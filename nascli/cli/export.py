"""``nascli export [CHECKPOINT] --format pt2|onnx|torchscript|hf``: a deployable file without nascli."""

from __future__ import annotations

from pathlib import Path

import typer

from nascli.cli.common import handle_errors, info, input_path, result, source_and_overrides


@handle_errors
def export(
    source: Path = typer.Argument(None, help="search.pt or finetune.pt; read from stdin when omitted."),
    fmt: str = typer.Option(
        "pt2", "--format", help="pt2 (torch.export), onnx, torchscript, or hf (a Hugging Face model directory)."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Output file (default: model.<format> beside the input)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
) -> None:
    """Export the selected subnet; the written file is loaded back and checked against the model."""
    from nascli.atomic import elsewhere
    from nascli.hf_layers import MODULE_FILE
    from nascli.stages.export import check_output, export_stage, suffix
    from nascli.stages.load import load_stage_input
    from nascli.stages.rundir import run_dir_lock
    from nascli.text_data import pinned_tokenizer

    extension = suffix(fmt)
    if output is not None:
        check_output(output, fmt)
    source, _ = source_and_overrides(source, [])
    model, path, _, recipe = load_stage_input(input_path(source), [], "export")
    # next to the input, not the run_dir its recipe records: a run directory that was moved or
    # copied, or a relative run_dir read from another cwd, would send the file elsewhere
    target = output or path.parent / f"model{extension}"
    # the input's directory is its run directory, held like every stage's: a second writer is
    # refused and the temp files a killed export left there are removed
    with run_dir_lock(path.parent), elsewhere("give another --output"):
        tokenizer = pinned_tokenizer(path.parent)  # a text run's tokenizer travels with an hf export
        path = export_stage(model, recipe.input_shape, fmt, target, recipe.input_dtype, tokenizer)
    payload = {"format": fmt}
    if fmt == "hf" and (path / MODULE_FILE).is_file():
        payload["trust_remote_code"] = True
        info(
            f"{path}: its layers differ in width; it holds its own {MODULE_FILE}: load it with"
            " AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)"
        )
    result(path, payload, json_out)
