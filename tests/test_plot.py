"""`vrooli analyze --plot`: the last start as an SVG picture, checked by parsing it."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

import pytest

from orchestrator.cli.plot import render_svg, tick_step
from tests.conftest import ROOT, Project, free_port, wait_for

SVG = "{http://www.w3.org/2000/svg}"
PX = 0.02  # the SVG writes coordinates to 1/100 px; allow two roundings


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text.encode())
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element) -> dict[str, dict[str, ET.Element]]:
    """resource -> {class of the bar: rect}, only the rows' rects (not the legend's)."""
    found: dict[str, dict[str, ET.Element]] = {}
    for rect in root.iter(f"{SVG}rect"):
        name = rect.get("data-resource")
        if name is not None:
            found.setdefault(name, {})[rect.get("class", "")] = rect
    return found


def x_of(rect: ET.Element) -> float:
    return float(rect.get("x", "nan"))


def width_of(rect: ET.Element) -> float:
    return float(rect.get("width", "nan"))


def no_external_references(text: str, root: ET.Element) -> None:
    for element in root.iter():
        assert not any(key.endswith("href") for key in element.attrib), element.attrib
        assert element.tag not in (f"{SVG}script", f"{SVG}image", f"{SVG}foreignObject")
    assert "url(" not in text and "@import" not in text


def test_the_picture_of_a_real_start(project: Project) -> None:
    project.write("""
        [resources.db]
        command = ["sh", "-c", "sleep 0.8; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.cache]
        command = ["sh", "-c", "sleep 0.3; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.app]
        command = ["sh", "-c", "sleep 0.2; echo ready; exec sleep 1000"]
        depends_on = ["db", "cache"]
        health = { probe = "log", pattern = "ready" }
        [resources.broken]
        command = ["sh", "-c", "sleep 0.1; exit 3"]
        health = { probe = "log", pattern = "never" }
    """)
    assert project.run("up").returncode == 1  # broken fails; the rest comes up
    done = project.run("analyze", "--plot", "start.svg")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "wrote start.svg" in done.stderr
    text = (project.dir / "start.svg").read_text()
    root = parse(text)
    no_external_references(text, root)
    record = json.loads((project.state_dir / "last_start.json").read_text())
    rows = {r["name"]: r for r in record["resources"]}
    drawn = bars(root)
    assert set(drawn) == set(rows) == {"db", "cache", "app", "broken"}
    labels = {g.get("data-resource"): g.find(f"{SVG}text") for g in root.iter(f"{SVG}g")}
    assert {name: label.text for name, label in labels.items() if label is not None} == {n: n for n in rows}

    # Every bar where the record puts it: x from the first moment, width by its seconds.
    per_px = float(root.get("data-seconds-per-pixel", "nan"))
    x0 = float(root.get("data-origin-x", "nan"))
    origin = min(ts(r[k]) for r in rows.values() for k in ("planned_at", "started_at") if r.get(k))
    for name in ("db", "cache", "app"):
        active = next(rect for cls, rect in drawn[name].items() if cls.startswith("active"))
        start, ready = ts(rows[name]["started_at"]), ts(rows[name]["ready_at"])
        assert abs(x_of(active) - (x0 + (start - origin) / per_px)) <= PX
        assert abs(width_of(active) * per_px - (ready - start)) <= PX * per_px
    # app waited for db (the later of its dependencies): a light segment from when `up`
    # asked for it to its start, ending where its bar begins.
    wait = drawn["app"]["wait"]
    app_active = drawn["app"]["active critical"]
    assert abs(x_of(wait) + width_of(wait) - x_of(app_active)) <= PX
    waited = ts(rows["app"]["started_at"]) - ts(rows["app"]["planned_at"])
    assert waited >= ts(rows["db"]["ready_at"]) - ts(rows["db"]["started_at"]) - 0.05
    assert abs(width_of(wait) * per_px - waited) <= PX * per_px
    assert "wait" not in drawn["db"] and "wait" not in drawn["cache"]  # nothing to wait for

    # The critical chain (as `analyze` computes it) and nothing else is highlighted.
    chain = json.loads(project.run("analyze", "--json").stdout)["critical_chain"]
    assert chain == ["app", "db"]
    highlighted = {n for n, classes in drawn.items() if "active critical" in classes}
    assert highlighted == set(chain)
    assert "active" in drawn["cache"]

    # The failed resource: a bar of its own kind, and its state written beside it.
    assert "failed" in drawn["broken"]
    marks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "mark"]
    assert marks == ["✗ failed"]

    # Rows top to bottom in start order.
    order = sorted(rows, key=lambda n: (ts(rows[n]["started_at"]), n))
    tops = {name: min(float(r.get("y", "nan")) for r in drawn[name].values()) for name in rows}
    assert sorted(rows, key=lambda n: tops[n]) == order

    # Tick labels: seconds, evenly spaced at the picture's own scale.
    ticks = [t for t in root.iter(f"{SVG}text") if t.get("class") == "tick-label"]
    values = [float((t.text or "").rstrip("s")) for t in ticks]
    assert values[0] == 0 and values == sorted(values) and len(values) >= 3
    for tick, value in zip(ticks, values, strict=True):
        assert abs(float(tick.get("x", "nan")) - (x0 + value / per_px)) <= PX


def test_plot_to_stdout_and_errors_in_one_line(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    done = project.run("analyze", "--plot", "-")
    assert done.returncode == 3 and "no start recorded yet" in done.stderr  # nothing to draw yet
    assert project.run("up").returncode == 0
    done = project.run("analyze", "--plot", "-")
    assert done.returncode == 0 and done.stderr == ""
    assert bars(parse(done.stdout)).keys() == {"one"}
    done = project.run("analyze", "--plot", "out.svg", "--json")
    assert json.loads(done.stdout) == {"ok": True, "plot": "out.svg"}
    (project.dir / "out.svg").chmod(0o640)
    assert project.run("analyze", "--plot", "out.svg").returncode == 0
    assert (project.dir / "out.svg").stat().st_mode & 0o777 == 0o640  # replaced, mode kept
    for target, problem in (("no-such-dir/out.svg", "No such file or directory"), (".", "cannot write the plot")):
        done = project.run("analyze", "--plot", target)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and target in lines[0] and problem in lines[0], lines
    assert not [p.name for p in project.dir.iterdir() if p.name.endswith(".tmp")]
    (project.state_dir / "last_start.json").write_text('{"resources": [{"name": "a", "state": "ready", '
                                                       '"started_at": 5}]}')
    done = project.run("analyze", "--plot", "bad.svg")
    assert done.returncode == 1 and "not a start record vrooli can read" in done.stderr
    assert "Traceback" not in done.stderr and not (project.dir / "bad.svg").exists()


def stamp(seconds: float) -> str:
    return f"2026-01-01T00:00:{seconds:09.6f}Z"


def record_row(name: str, planned: float, start: float | None, ready: float | None, state: str = "ready",
               **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "planned_at": stamp(planned),
            "started_at": stamp(start) if start is not None else None,
            "ready_at": stamp(ready) if ready is not None else None,
            "startup_seconds": ready - start if ready is not None and start is not None else None,
            "depends_on": extra.pop("depends_on", {}), **extra}


def test_names_are_escaped_and_warm_up_follows_ready() -> None:
    odd = 'x<y>&"z\''
    record = {"project": "p&<q>\x01", "recorded_at": stamp(20.0), "resources": [
        record_row("ctl\x1b[31m\x00", 10.0, 10.0, 10.5),  # a hand-edited record: no XML can hold these
        record_row("ollama", 10.0, 10.0, 12.0, warmup={"started_at": stamp(12.5), "ready_at": stamp(18.0)}),
        record_row(odd, 10.0, 12.0, 13.0, depends_on={"ollama": "healthy"}),
        record_row("late", 10.0, 11.0, None, state="starting"),
    ]}
    text = render_svg(record)
    root = parse(text)  # well formed although names and project hold XML's special characters
    no_external_references(text, root)
    drawn = bars(root)
    assert set(drawn) == {"ollama", odd, "late", "ctl\ufffd[31m\ufffd"}
    assert [t.text for t in root.iter(f"{SVG}text") if t.text == odd] == [odd]
    per_px = float(root.get("data-seconds-per-pixel", "nan"))
    warm, active = drawn["ollama"]["warmup"], drawn["ollama"]["active critical"]
    assert x_of(warm) > x_of(active) + width_of(active)  # after ready
    assert abs(width_of(warm) * per_px - 5.5) <= PX * per_px
    # Not ready when the start settled: a grey bar to the record's end, its state beside it.
    unfinished = drawn["late"]["unfinished"]
    assert abs((x_of(unfinished) + width_of(unfinished)) - (x_of(active) + 10.0 / per_px)) <= PX
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "mark"] == ["starting"]


@pytest.mark.parametrize(("span", "step"), [(0.68, 0.1), (3.2, 0.5), (18.0, 2.0), (0.004, 0.0005), (95.0, 10.0)])
def test_ticks_are_round_numbers(span: float, step: float) -> None:
    assert tick_step(span) == pytest.approx(step)


def test_model_warm_up_is_recorded_and_drawn_after_ready(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.ollama]
        command = ["{sys.executable}", "{ROOT / 'tests' / 'standins' / 'ollama.py'}"]
        ports = [{port}]
        env = {{ OLLAMA_HOST = "127.0.0.1:{port}", STANDIN_PULL_SECONDS = "0.3", STANDIN_LOAD_SECONDS = "0.3" }}
        health = {{ probe = "http", url = "http://127.0.0.1:{port}/api/version" }}
        models = ["llama3.1:8b"]
        model_load = "background"
    """)
    assert project.run("up").returncode == 0
    record_file = project.state_dir / "last_start.json"

    def warmed() -> dict[str, Any] | None:
        row = json.loads(record_file.read_text())["resources"][0]
        return row if row.get("warmup") else None

    row = wait_for(warmed, 60)
    began, ended = ts(row["warmup"]["started_at"]), ts(row["warmup"]["ready_at"])
    assert ts(row["ready_at"]) <= began and ended - began >= 0.6  # a pull and a load, after ready
    done = project.run("analyze", "--plot", "-")
    root = parse(done.stdout)
    per_px = float(root.get("data-seconds-per-pixel", "nan"))
    warm = bars(root)["ollama"]["warmup"]
    assert abs(width_of(warm) * per_px - (ended - began)) <= PX * per_px
    # A later `up` (nothing to start) rewrites the record and keeps the warm-up of this start.
    assert project.run("up").returncode == 0
    assert json.loads(record_file.read_text())["resources"][0]["warmup"] == row["warmup"]
