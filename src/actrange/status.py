"""`actrange status DIR`: the runs of a result directory, counted and listed by state."""

from collections import Counter
from pathlib import Path

from actrange.config import format_number
from actrange.store import Store

STATES = ("finished", "diverged", "running", "pending", "failed")


def status_lines(store: Store) -> list[str]:
    """One line of counts, then one line per run of the latest experiment."""
    experiment = store.latest_experiment()
    run_ids = experiment["run_ids"] if experiment else []
    runs = store.runs(run_ids)
    counts = Counter(r["status"] for r in runs)
    lines = [
        f"{len(runs)} runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES),
    ]
    epochs_done = Counter(row["run_id"] for row in store.epochs(run_ids))
    for run in runs:
        config = run["config"]
        accuracy = run["test_accuracy"]
        shown = f"{accuracy:6.2f} %" if accuracy is not None else "     -  "
        lo, hi = (format_number(v) for v in config["range"])
        lines.append(
            f"{run['run_id']}  {run['status']:<9} {config['label']:<12} [{lo}, {hi}]".ljust(50)
            + f" seed {config['seed']:<5} lr {format_number(config['lr']):<6} "
            f"epoch {epochs_done[run['run_id']]:>3}/{config['epochs']:<3}  test acc {shown}"
        )
    return lines


def print_status(directory: Path) -> int:
    """Print the status of ``directory``; return the exit status (0)."""
    with Store(directory, create=False) as store:
        for line in status_lines(store):
            print(line)
    return 0
