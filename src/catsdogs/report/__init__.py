"""The run's `report.html`: one self-contained page that opens offline.

Figures are embedded as base64 PNG `data:` URIs and the style sheet is inline;
there is no script, font or style sheet from anywhere else, so the file can be
mailed or opened from a USB stick. It shows whatever the run folder holds:
right after training the config, data and curves, after `catsdogs evaluate`
also the metrics, diagnostics, mistakes, "unsure" answers and Grad-CAM examples, after
`catsdogs export` the exports and their verification. The sections themselves
are rendered by `report.sections`; this module puts them on one page.
"""

import os
import time
from pathlib import Path

from catsdogs.data.summary import MANIFEST_NAME
from catsdogs.fileio import atomic_write_text
from catsdogs.report import sections
from catsdogs.report.abstain import abstain_section
from catsdogs.runs import EVALUATION_KEY, RunDir

STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2f6fb0; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: linear-gradient(120deg, #1d3f63, #2f6fb0); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 0; opacity: .85; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 40px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 14px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 40px 40px; }
section { padding-top: 18px; border-bottom: 1px solid var(--line); padding-bottom: 18px; }
h2 { font-size: 20px; margin: 8px 0 12px; }
h3 { font-size: 16px; margin: 16px 0 8px; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.card .label { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .value { font-size: 26px; font-weight: 650; }
.card .detail { font-size: 13px; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--soft); font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; align-items: start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 10px; padding: 10px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: var(--muted); padding-top: 6px; }
.wide { grid-column: 1 / -1; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 14px; border-radius: 4px; }
.muted { color: var(--muted); }
code { background: var(--soft); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
.config { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 0 24px; }
.verdict-yes { color: #18794e; font-weight: 650; }
.verdict-no { display: inline-block; padding: 0 8px; border-radius: 4px;
              color: #fff; background: #b42318; font-weight: 700; }
tr.unverified td { background: #fdecea; }
table.exports td { white-space: nowrap; }
table.exports td:nth-child(2), table.exports th:nth-child(2) { text-align: left; }
.warning { background: #fdecea; border-left: 4px solid #b42318; padding: 8px 14px; border-radius: 4px; }
footer { color: var(--muted); font-size: 13px; padding: 18px 40px; max-width: 1240px; margin: 0 auto; }
"""


def write_report(run_dir: str | os.PathLike | RunDir) -> Path:
    """Render the run folder's report.html from what the folder holds, and write it atomically.

    Training calls this at the end of every run, `catsdogs evaluate` calls it again
    once the evaluation figures exist, and `catsdogs export` once more so that the
    Deployment section lists the new export.

    Args:
        run_dir: the run folder, as a path or a `RunDir`.

    Returns:
        The path of report.html.

    Raises:
        CatsdogsError: if the folder is not a run folder.
    """
    run = RunDir.open(run_dir.path if isinstance(run_dir, RunDir) else run_dir)
    atomic_write_text(run.report_path, render_report(run))
    return run.report_path


def render_report(run: RunDir) -> str:
    """Return the report page for a `RunDir` as an HTML string."""
    escape = sections.escape
    info = run.read_run_info()
    metrics = sections.read_json(run.metrics_path) or {}
    evaluations = metrics.get(EVALUATION_KEY, {})
    evaluated = evaluations.get(evaluations.get("latest")) if evaluations else None
    manifest = sections.read_json(Path(info["data_dir"]) / MANIFEST_NAME) if info.get("data_dir") else None
    not_evaluated = sections.not_evaluated()
    page = [
        ("summary", "Summary", sections.summary_section(run, info, metrics, evaluated)),
        ("data", "Data", sections.data_section(info, metrics, manifest)),
        ("training", "Training", sections.training_section(run, metrics)),
        ("metrics", "Metrics", sections.metrics_section(evaluated)),
        ("diagnostics", "Diagnostics", sections.diagnostics_section(run, evaluated)),
        ("mistakes", "Misclassified", sections.mistakes_section(run) if evaluated else not_evaluated),
        ("abstain", "Unsure answers", abstain_section(run, evaluated) if evaluated else not_evaluated),
        ("gradcam", "Grad-CAM", sections.gradcam_section(run) if evaluated else not_evaluated),
        ("deployment", "Deployment", sections.deployment_section(run)),
        ("config", "Configuration", sections.config_section(run)),
    ]
    navigation = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in page)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{content}</section>' for key, title, content in page)
    versions = ", ".join(f"{name} {version}" for name, version in info.get("versions", {}).items())
    model_name = info.get("model") or metrics.get("model") or "?"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>catsdogs report: {escape(run.path.name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(run.path.name)}</h1><p>model <b>{escape(model_name)}</b>"
        f" · status {escape(info.get('status', 'unknown'))} · started {escape(info.get('started', '?'))}</p></header>"
        f"<nav>{navigation}</nav><main>{body}</main>"
        f"<footer>Written by catsdogs on {time.strftime('%Y-%m-%d %H:%M')}. {escape(versions)}</footer></body></html>\n"
    )
