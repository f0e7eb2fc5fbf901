"""The budget of ``maskclf auto``: one deadline in ``clock.json`` that every worker of a
study follows, paused while no worker runs."""

from __future__ import annotations

import json
import time

from maskclf.atomic import write_json
from maskclf.auto.folder import StudyFolder


class BudgetClock:
    """The budget's deadline in ``clock.json``, shared by the workers of a study. Stopping
    (Ctrl+C, SIGTERM) saves the time left, which the next command resumes with."""

    def __init__(self, folder: StudyFolder, budget_s: float, started: float | None = None):
        """``started``: when the command began (its imports count against the budget)."""
        self.path = folder.file(StudyFolder.CLOCK)
        record = json.loads(self.path.read_text()) if self.path.is_file() else {
            "budget_s": budget_s, "left_s": budget_s, "deadline": None}
        if record["deadline"] is None:
            record["deadline"] = (started or time.time()) + record["left_s"]
            write_json(self.path, record)
        self.budget_s, self.deadline = float(record["budget_s"]), float(record["deadline"])

    def left(self) -> float:
        return self.deadline - time.time()

    def elapsed(self) -> float:
        return self.budget_s - self.left()

    def pause(self) -> None:
        write_json(self.path, {"budget_s": self.budget_s, "left_s": max(0.0, self.left()),
                               "deadline": None})
