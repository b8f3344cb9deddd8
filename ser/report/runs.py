"""Finding and loading runs: :func:`find_runs` finds the run folders of a run, an ``outputs/``
folder or a Hydra multirun folder; :func:`load_run` reads one (finished: ``results.json``;
unfinished: what was logged so far, from its Hydra overrides, config and ``loops.jsonl``, and
whether it can resume); :func:`load_runs` does both for a folder; :class:`ReportError` is the
one-line error when a report cannot be made.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ser.report.values import _pct, _plural

PHASES = ("ser", "seed", "full")
#: folders never searched for runs (inside a run, or our own output)
_SKIP_DIRS = {"report", "checkpoints", "lightning_logs", "wandb", "reward_model", "__pycache__", "csv_logs"}
_MAX_DEPTH = 4


class ReportError(Exception):
    """A report cannot be made (missing folder, no runs); the message is one line naming the path."""


def is_run_dir(path: Path) -> bool:
    """A run folder has results.json, .hydra/, or a ser/, seed/ or full/ phase folder (a folder of
    that name holding a Hydra sweep, ``multirun.yaml``, is a sweep folder, not a phase)."""
    path = Path(path)
    return ((path / "results.json").is_file() or (path / ".hydra").is_dir()
            or any((path / ph).is_dir() and not (path / ph / "multirun.yaml").is_file() for ph in PHASES))


def _natural_key(path: Path):
    """Sort ``2`` before ``10`` (Hydra numbers multirun jobs)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t]


def find_runs(path) -> list[Path]:
    """The run folders under ``path`` (``path`` itself when it is a run), sorted.

    Searches up to four levels deep (a sweep's job folders may be nested one level deeper) and
    never inside a run's phase folders. Raises ``ReportError`` when ``path`` does not exist; an
    existing folder without runs gives ``[]``.
    """
    root = Path(path)
    if not root.exists():
        raise ReportError(f"{root}: no such file or directory")
    if root.is_file() and root.name == "results.json":
        root = root.parent
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder (give a run folder or a sweep folder)")
    found: list[Path] = []
    seen: set[Path] = set()  # a run reached twice through a symlink is listed once

    def walk(d: Path, depth: int) -> None:
        real = d.resolve()
        if real in seen:
            return
        seen.add(real)
        run = is_run_dir(d)
        if run:
            found.append(d)
        if depth >= _MAX_DEPTH:
            return
        try:
            children = sorted(d.iterdir())
        except OSError:
            return
        for c in children:
            if not c.is_dir() or c.name.startswith(".") or c.name in _SKIP_DIRS or (run and c.name in PHASES):
                continue
            walk(c, depth + 1)

    walk(root, 0)
    return sorted(found, key=_natural_key)


def _read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _split_overrides(s: str) -> list[str]:
    """Split a Hydra override_dirname ``a=1,b=[1,2],c=x`` on the commas between items."""
    items, depth, cur = [], 0, ""
    for ch in s:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def sweep_order(root) -> dict[str, list[str]]:
    """The order in which a Hydra multirun folder's ``multirun.yaml`` lists each swept key's values
    (the sweeper's ``params``, then command-line sweeps ``key=a,b,c``); ``{}`` without one."""
    data = _read_yaml(Path(root) / "multirun.yaml") if root is not None else None
    if not isinstance(data, dict):
        return {}
    hydra = data.get("hydra") or {}
    items = [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
    items += [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
    order: dict[str, list[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        values = _split_overrides(value)
        if len(values) > 1:
            order[key.lstrip("+~")] = values
    return order


def _read_overrides(run_dir: Path) -> list[str] | None:
    """Hydra's ``.hydra/overrides.yaml`` (a list of ``key=value``), or None when absent."""
    f = run_dir / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return None
    data = _read_yaml(f)
    if isinstance(data, list):
        return [str(x) for x in data]
    return None


def _read_loops(phase_dir: Path) -> list[dict]:
    f = phase_dir / "loops.jsonl"
    out = []
    if f.is_file():
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut off by a kill: what came before is still good
    return out


def _expected_phases(run_dir: Path) -> list[str]:
    """The phases the run's saved Hydra config asks for (empty when unknown)."""
    cfg = _read_yaml(run_dir / ".hydra" / "config.yaml")
    if not isinstance(cfg, dict):
        return []
    try:
        max_loops = int((cfg.get("loop") or {}).get("max_loops", 0))
        frac = float(cfg.get("labeled_fraction", 0.15))
    except (TypeError, ValueError):
        return []
    phases = ["ser" if max_loops > 0 else ("full" if frac >= 1 else "seed")]
    if cfg.get("compare_full") and frac < 1:
        phases.append("full")
    return phases


def _unfinished_message(run_dir: Path, problem: str) -> tuple[str, dict]:
    parts = [problem]
    phases = _expected_phases(run_dir)
    phases += [ph for ph in PHASES if (run_dir / ph).is_dir() and ph not in phases]
    logged: dict[str, list[dict]] = {}
    if not phases:
        parts.append("no phase started (nothing logged, no checkpoint)")
    multi = len(phases) > 1
    for ph in phases:
        pdir = run_dir / ph
        prefix = f"{ph}: " if multi or ph != "ser" else ""
        if (pdir / "phase.json").is_file():
            parts.append(f"{ph}: phase finished")
            continue
        if not pdir.is_dir():
            parts.append(f"{ph}: not started")
            continue
        loops = _read_loops(pdir)
        logged[ph] = loops
        s = prefix + _plural(len(loops), "loop") + " logged"
        if loops:
            last = loops[-1]
            extra = [f"last: loop {last.get('loop', len(loops) - 1)}"]
            if last.get("status"):
                extra.append(str(last["status"]))
            if last.get("test_acc") is not None:
                extra.append(f"test {_pct(last['test_acc'])}%")
            s += f" ({', '.join(extra)})"
        parts.append(s)
        ckpt = pdir / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            parts.append(f"resumable from {ph}/checkpoints/last.ckpt")
        else:
            parts.append(f"no {ph}/checkpoints/last.ckpt (that phase restarts from scratch)")
    if phases and all((run_dir / ph / "phase.json").is_file() for ph in phases):
        parts.append("all phases finished: run the same command again to write results.json")
    return "; ".join(parts), logged


def load_run(path, root=None) -> dict:
    """Read one run folder.

    Returns ``{"path", "rel_path", "name", "status": "finished"|"unfinished", "missing": str|None,
    "overrides": str, "override_list": list|None, "results": dict|None, "logged": {phase: [DIAG]}}``.
    ``path`` is the folder as given (to read it); ``rel_path`` the folder relative to ``root`` ("."
    for ``root`` itself; default: the folder's name), what reports print; ``name`` is the folder
    relative to ``root`` (default: the folder's name); ``overrides`` is
    ``.hydra/overrides.yaml`` joined with ``,`` ("" when there is none); ``missing`` says, for an
    unfinished run, what is missing and what was logged (e.g. "no results.json; 2 loops logged
    (last: loop 1, HARD, test 65.00%); resumable from ser/checkpoints/last.ckpt").
    """
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{p}: no such run folder")
    name, rel_path = p.name, p.name
    if root is not None:
        try:
            rel = p.resolve().relative_to(Path(root).resolve())
            name = str(rel) if str(rel) != "." else p.resolve().name
            rel_path = str(rel)
        except ValueError:
            pass
    ov = _read_overrides(p)
    run = {"path": str(p), "rel_path": rel_path, "name": name, "overrides": ",".join(ov) if ov is not None else "",
           "override_list": ov, "status": "unfinished", "missing": None, "results": None, "logged": {}}
    f = p / "results.json"
    if f.is_file():
        try:
            results = json.loads(f.read_text())
            if not isinstance(results, dict) or not isinstance(results.get("phases"), dict):
                raise ValueError("no 'phases'")
        except (OSError, ValueError) as e:
            run["missing"], run["logged"] = _unfinished_message(p, f"results.json unreadable ({e})")
            return run
        run.update(status="finished", results=results)
        return run
    run["missing"], run["logged"] = _unfinished_message(p, "no results.json")
    return run


def load_runs(path) -> list[dict]:
    """``load_run`` for every run under ``path``; ``ReportError`` when there is none."""
    root = Path(path)
    paths = find_runs(root)
    if not paths:
        raise ReportError(f"{root}: no runs found (a run folder has results.json, .hydra/, or ser/, seed/ or full/)")
    return [load_run(p, root) for p in paths]
