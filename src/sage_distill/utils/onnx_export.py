"""What every ONNX export and ONNX Runtime loader here shares (the ARC model's `export/`, the control
policy's `robot/onnx_policy.py`): the refusals before anything is written, a folder that appears whole or
not at all, int8 by dynamic quantisation, the manifest's graph descriptions and checks, and CPU sessions."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SageError, check_new_output_dir

PRECISIONS = ("fp32", "int8")
OPSET = 17  # <= 20: what Jetson-class TensorRT 10 reads

INSTALL_HINT = "pip install -e '.[onnx]' (make demo / make test do)"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise SageError(f"onnxruntime is not installed: {INSTALL_HINT}", file="--runtime") from None
    return onnxruntime


def check_exporter() -> None:
    """torch's exporter needs the onnx package; say so in one line instead of its ImportError."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SageError(f"onnx is not installed: {INSTALL_HINT}") from None


def check_export_args(source: str | Path, out: str | Path, precision: str, option: str = "--model") -> Path:
    """Everything an export can refuse before it loads anything: the precision, an --out that is a file or
    holds something, a source (`option`) that is not a folder. Returns --out as a Path."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unsupported precision {precision!r}; use one of {', '.join(PRECISIONS)}",
                          file="--precision")
    out = check_new_output_dir(out)
    if not Path(source).is_dir():
        raise ConfigError(f"{source}: not a folder", file=option)
    return out


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to build an export in, renamed to `out` when the block ends without
    an exception and removed otherwise: a kill or an error never leaves half an export. `out` must be absent
    or empty (`check_export_args`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the export is a folder like any other
    try:
        yield tmp
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def quantize_int8(path: Path) -> None:
    """Replace the graph at `path` by ONNX Runtime's dynamic int8 quantisation of its MatMul weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_suffix(".fp32.onnx")
    path.rename(fp32)
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its advice to pre-process is for CNNs
    try:
        quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    fp32.unlink()


def graph_spec(file: str, session: Any) -> dict:
    """A graph's file, inputs and outputs (name, type, shape with symbolic axes as names) for a manifest."""
    def describe(values):
        return [{"name": v.name, "type": v.type, "shape": [d if isinstance(d, int) else str(d) for d in v.shape]}
                for v in values]

    return {"file": file, "inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def cpu_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime session on the CPU provider: all graph optimisations, `threads` intra-op threads
    (0: torch's count, so both runtimes are timed on the same threads)."""
    import torch

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise SageError(f"{path.parent}: cannot load the ONNX graphs: {' '.join(str(e).split())[:200]}") from None


def read_manifest(folder: str | Path, name: str, fmt: str, option: str, exporter: str,
                  check: Callable[[dict], None] | None = None) -> dict:
    """An export's manifest `folder/name`, checked to be of format `fmt` with every graph file present and
    by `check` (which raises ValueError, KeyError or TypeError on what it refuses); a SageError naming
    `option` when the folder holds no export (a torch folder is told to run `exporter` first)."""
    folder = Path(folder)
    path = folder / name
    if not path.is_file():
        hint = f" (a torch folder: export it first with `{exporter}`)" if (folder / "config.json").is_file() else ""
        raise SageError(f"{folder}: no exported ONNX graphs here (missing {name}){hint}", file=option)
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != fmt:
            raise ValueError(f"format {meta.get('format')!r}, expected {fmt!r}")
        for graph in meta["graphs"].values():
            if not (folder / graph["file"]).is_file():
                raise ValueError(f"missing graph file {graph['file']}")
        if check is not None:
            check(meta)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SageError(f"{path}: invalid ONNX export manifest: {' '.join(str(e).split())[:200]}") from None
    return meta
