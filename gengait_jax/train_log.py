"""Training logs from host 0: metrics.jsonl, TensorBoard, absl lines, compiled-step stats."""

from __future__ import annotations

import datetime
import json

from absl import logging

from gengait_jax.workdir import Workdir

_SHOWN = ("loss", "grad_norm", "lr")


def _fmt_eta(seconds: float) -> str:
    """Seconds -> h:mm:ss."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class MetricsWriter:
    """One JSON row per log step in workdir/metrics.jsonl (+ TensorBoard in workdir/tb).

    On a resumed run, rows of steps after the restored step are dropped, so the file always
    describes the run that produced the newest checkpoint. Local files are appended to;
    remote ones (gs://, no append) are rewritten whole.
    """

    def __init__(self, workdir: Workdir, start_step: int, active: bool = True):
        self.active = active
        self.path = workdir.metrics
        self.remote = workdir.remote
        self.rows: list[dict] = []
        self.tb = None
        if not active:
            return
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            self.rows = [r for r in map(json.loads, filter(None, lines)) if r["step"] <= start_step]
        self._rewrite()
        try:
            import tensorboardX
            self.tb = tensorboardX.SummaryWriter(str(workdir.file("tb")),
                                                 purge_step=start_step + 1)
        except Exception as e:  # e.g. gs:// without google-cloud-storage: metrics.jsonl only
            logging.warning("TensorBoard disabled (%s)", e)

    def _rewrite(self) -> None:
        """Writes all rows (atomically for local files)."""
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        if self.remote:
            self.path.write_text(text)
        else:
            tmp = self.path.parent / (self.path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)

    def write(self, row: dict, **extra) -> None:
        """Records one row (logged on every host, written on host 0)."""
        _log_line(row, extra)
        if not self.active:
            return
        self.rows.append(row)
        if self.remote:
            self._rewrite()
        else:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        """Flushes TensorBoard."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _log_line(row: dict, extra: dict) -> None:
    """One absl line: step, loss, throughput and time left (or validation losses)."""
    if "val_loss" in row:
        parts = ", ".join(f"{k[4:-5]} {v:.4f}" for k, v in row.items()
                          if k.startswith("val_") and k != "val_loss")
        logging.info("step %d  val_loss %.4f (%s)  eval %.1f s", row["step"], row["val_loss"],
                     parts, extra.get("eval_s", 0.0))
        return
    shown = "  ".join(f"{k} {row[k]:.4g}" for k in _SHOWN if k in row)
    logging.info("step %d  %s  | %.0f seq/s  %.3g GFLOP/s  %.3f s/step  ETA %s", row["step"],
                 shown, row["seq_per_s"], row["flops_per_s"] / 1e9, row["step_time_s"],
                 _fmt_eta(row["eta_s"]))


def log_compiled(name: str, compiled) -> None:
    """Logs XLA's memory analysis and FLOP estimate of a compiled step."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    if mem is not None:
        mib = lambda b: b / 2**20
        logging.vlog(1, "%s memory per device: args %.1f MiB, outputs %.1f MiB, temp %.1f MiB, "
                     "aliased %.1f MiB, code %.1f MiB", name, mib(mem.argument_size_in_bytes),
                     mib(mem.output_size_in_bytes), mib(mem.temp_size_in_bytes),
                     mib(mem.alias_size_in_bytes), mib(mem.generated_code_size_in_bytes))
    logging.vlog(1, "%s XLA cost: %.3g GFLOP, %.3g GB accessed per call", name,
                 cost.get("flops", 0.0) / 1e9, cost.get("bytes accessed", 0.0) / 1e9)
