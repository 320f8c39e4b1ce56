"""What `catsdogs train` does end to end: train, then evaluate once and write the report.

`training.train` only trains and fills the run folder; evaluation and the
report sit above it, so training never depends on them (and under distributed
training only the process that calls this evaluates, not every worker).
"""

from catsdogs.evaluation.evaluate import report_after_training
from catsdogs.runs import RunDir
from catsdogs.training.trainer import train


def train_and_report(config, data_dir, **train_arguments) -> RunDir | None:
    """Train with `training.train(config, data_dir, **train_arguments)`, then evaluate and write report.html.

    Returns:
        The finished `RunDir`; its report is written even when the evaluation fails (see
        `report_after_training`). None on a multi-worker run's non-chief worker, which neither
        evaluates nor reports.
    """
    run_dir = train(config, data_dir, **train_arguments)
    if run_dir is None:
        return None
    report_after_training(
        run_dir, engine=config.predict.engine, abstain_target_error=config.predict.abstain_target_error
    )
    return run_dir
