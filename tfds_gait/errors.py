"""One error type for bad gait input: a one-line message naming the file and the problem."""

from __future__ import annotations

import os


class GaitDataError(ValueError):
    """Bad input data; `str(e)` is '<path>: <problem>' on one line."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
