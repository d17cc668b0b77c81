"""`vrooli export compose|kubernetes`: hand the same graph, probes and limits to a real
cluster manager. Exporters only read the validated project; nothing here starts anything.

Output is all or nothing: every file is written to a temporary name beside its target and
renamed into place only once all of them are written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config.variables import escaped_short
from orchestrator.export.common import FORMATS, ExportError, Notes, load_source, plan
from orchestrator.export.yamltext import Document, dump_all

__all__ = ["FORMATS", "ExportError", "Request", "Result", "run"]


@dataclass(frozen=True)
class Request:
    format: str
    files: list[Path]
    out: Path | None = None  # None: stdout
    namespace: str | None = None
    skip_process: bool = False
    conditions: bool = False
    directory: bool = False  # OUT was given with a trailing '/': a directory even if it does not exist
    endpoint_mode: str = "vip"  # compose: "dnsrr" where Swarm has no IPVS (see export.compose)


@dataclass
class Result:
    format: str
    project: str
    text: str  # the whole export (one YAML stream), as printed when there is no OUT
    documents: list[dict[str, object]]
    resources: list[str]
    external: list[str]
    skipped: list[str]
    notes: Notes
    written: list[Path] = field(default_factory=list)


def run(request: Request) -> Result:
    if request.format not in FORMATS:
        raise ExportError(f"unknown export format '{request.format}' (known: {', '.join(FORMATS)})")
    _check_endpoint_mode(request)
    as_directory = request.out is not None and (request.directory or request.out.is_dir())
    if as_directory and request.format == "compose":
        raise ExportError(f"{request.out}: is a directory; give the Compose file's name")
    the_plan = plan(load_source(request.files), request.skip_process)
    groups: dict[str, list[Document]] = {}
    if request.format == "compose":
        from orchestrator.export import compose

        out_dir = request.out.absolute().parent if request.out is not None else None
        options = compose.Options(request.conditions, out_dir, request.endpoint_mode)
        groups["docker-compose"] = [compose.build(the_plan, options)]
    else:
        from orchestrator.export import kubernetes

        for manifest in kubernetes.build(the_plan, kubernetes.Options(request.namespace)):
            groups.setdefault(manifest.group, []).append(manifest.doc)
    header = [f"vrooli export {request.format}: project {the_plan.project.name}"] if request.format != "compose" else []
    every = [d for docs in groups.values() for d in docs]
    result = Result(request.format, the_plan.project.name, dump_all(every, header), [d.data for d in every],
                    list(the_plan.containers), list(the_plan.external), list(the_plan.skipped), the_plan.notes)
    if request.out is not None:
        if as_directory:
            texts = {request.out / f"{name}.yaml": dump_all(docs, header) for name, docs in groups.items()}
        else:
            texts = {request.out: result.text}
        result.written = write_all(texts, request.out if as_directory else None)
    return result


def _check_endpoint_mode(request: Request) -> None:
    from orchestrator.export.compose import ENDPOINT_MODES

    if request.endpoint_mode not in ENDPOINT_MODES:
        raise ExportError(f"unknown --endpoint-mode '{escaped_short(request.endpoint_mode)}' "
                          f"(known: {', '.join(ENDPOINT_MODES)})")
    if request.format != "compose" and request.endpoint_mode != "vip":
        raise ExportError(f"--endpoint-mode is for compose only (Swarm), not {request.format}")


def write_all(texts: dict[Path, str], directory: Path | None) -> list[Path]:
    """Write every file or none: temporaries first, then renames."""
    if directory is not None:
        try:
            directory.mkdir(exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot write {directory}: {exc.strerror or exc}") from None
    mask = os.umask(0)
    os.umask(mask)
    staged: list[tuple[str, Path]] = []
    try:
        for target, text in texts.items():
            try:
                handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            except OSError as exc:
                raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
            staged.append((temporary, target))
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as stream:
                    stream.write(text)
                os.chmod(temporary, 0o666 & ~mask)  # a plain file, as the user's umask says
            except OSError as exc:
                raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
        for temporary, target in staged:
            try:
                os.replace(temporary, target)
            except OSError as exc:
                raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return [target for _, target in staged]
