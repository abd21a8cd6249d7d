"""Progress display: a tqdm bar (``ProgressCallback``) or plain prints (``PrinterCallback``)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from statetrain.callbacks.base import TrainerCallback
from statetrain.data.batches import has_length


def _format_logs(logs: dict[str, Any], max_str_len: int) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in logs.items():
        if key == "total_flos":
            continue
        if isinstance(value, str) and len(value) > max_str_len:
            shown[key] = f"[string of length {len(value)} > max_str_len={max_str_len}]"
        elif isinstance(value, float):
            shown[key] = f"{value:.4g}"
        else:
            shown[key] = value
    return shown


class ProgressCallback(TrainerCallback):
    """One bar over the optimizer steps, one per evaluation; logs written above the bar."""

    def __init__(self, max_str_len: int = 100) -> None:
        self.training_bar: Any = None
        self.prediction_bar: Any = None
        self.max_str_len = max_str_len
        self.current_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True)
        self.current_step = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
            self.current_step = state.global_step

    def on_prediction_step(
        self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and has_length(eval_dataloader):
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(
                    total=len(eval_dataloader), leave=self.training_bar is None, dynamic_ncols=True
                )
            self.prediction_bar.update(1)

    def _close_prediction_bar(self, state: Any) -> None:
        if state.is_world_process_zero and self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close_prediction_bar(state)

    def on_predict(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close_prediction_bar(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs is not None:
            self.training_bar.write(str(_format_logs(logs, self.max_str_len)))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.close()
        self.training_bar = None


class PrinterCallback(TrainerCallback):
    """Prints every log dict (the fallback when ``disable_tqdm``).

    Like HF's, it removes ``total_flos`` from the logs it is given, so the metrics that
    ``train()`` returns lack that key when this callback is active (kept for parity).
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is not None:
            logs.pop("total_flos", None)
        if state.is_local_process_zero and logs is not None:
            print(_format_logs(logs, max_str_len=10**9))
