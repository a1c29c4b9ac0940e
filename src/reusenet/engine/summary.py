"""Per-epoch run summaries: CSV and JSON rewritten atomically from the full history, plus TensorBoard."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .checkpoint import atomic_write


def write_history(run_dir: Path, history: list[dict]) -> None:
    """summary.csv and summary.json from the whole history, so a resumed run's files stay consistent."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(run_dir / "summary.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    write_json(run_dir / "summary.json", history)


def write_json(path: Path, value) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2)))


class TensorBoardLog:
    """Scalars per epoch; a resumed run purges events written after its checkpoint."""

    def __init__(self, folder: Path, enabled: bool, start_epoch: int):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

            self.writer = SummaryWriter(str(folder), purge_step=start_epoch + 1 if start_epoch else None)

    def log(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
