"""The run page ``RUN/index.html``: the run's state, its headline numbers and every figure once."""
from __future__ import annotations

import html
from pathlib import Path

from betavae.evaluation.figure_set import FIGURES
from betavae.evaluation.headline import SCORES, HeadlineError, read_headline
from betavae.fileio import write_text
from betavae.runs import RunPaths, read_info

INFO_KEYS = ("status", "step", "best_step", "best_val_loss", "parameters", "device", "precision")


def _figures(paths: RunPaths) -> list[tuple[str, str]]:
    """(relative path, caption) of each registered figure the run has, in registry order."""
    return [(paths.figure(spec.file).relative_to(paths.root).as_posix(), spec.caption)
            for spec in FIGURES.values() if paths.figure(spec.file).is_file()]


def _summary_rows(paths: RunPaths) -> list[tuple[str, str]]:
    info = read_info(paths)
    rows = [(key, str(info[key])) for key in INFO_KEYS if key in info]
    if "data" in info:
        rows.append(("data", f"{info['data'].get('name', '')} — {info['data'].get('train')} train / {info['data'].get('val')} val"))
    rows += _starts_rows(paths, info)
    try:
        headline = read_headline(paths.root)
    except HeadlineError as exc:
        return rows + [("evaluation", str(exc))]
    if headline is not None:
        rows += [(f"{SCORES[key].label} ({key})", SCORES[key].format(value)) for key, value in headline.computed().items()]
    return rows


def _starts_rows(paths: RunPaths, info: dict) -> list[tuple[str, str]]:
    """One row naming the starts this run was chosen from (``RUN/starts.json``), if any."""
    from betavae.starts import read_starts, score

    record = read_starts(paths.root)
    if not record or not record["starts"] or record.get("chosen") != info.get("seed"):
        return []
    tried = "; ".join(f"seed {e['seed']}: {score(e)}" for e in record["starts"])
    return [("starts", f"kept seed {record['chosen']} of {len(record['starts'])} judged by traversal separation "
             f"(purity × exclusivity of the decoded traversals) after {record['policy']['steps']} steps ({tried})")]


def write_run_page(run_dir: str | Path) -> Path:
    """Writes ``index.html`` linking the run's figures (relative paths) and summary numbers."""
    paths = RunPaths(Path(run_dir))
    title = html.escape(paths.root.name)
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(paths))
    figures = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for src, caption in _figures(paths)
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>betavae run {title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:2px 12px;border-bottom:1px solid #ddd}}
figure{{margin:1.5em 0}}img{{max-width:100%;image-rendering:pixelated}}figcaption{{color:#555}}</style></head>
<body><h1>Run {title}</h1><table>{table}</table>{figures}
<p>Config: <a href="config.yaml">config.yaml</a> · logs: <a href="metrics/train.csv">train.csv</a>,
<a href="metrics/val.csv">val.csv</a></p></body></html>
"""
    write_text(paths.index, page)
    return paths.index
