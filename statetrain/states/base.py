"""The contract of a state: one entry point that does the state's work on the run context."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from statetrain.events.event import Event

if TYPE_CHECKING:
    from statetrain.context.run import Run


class State(ABC):
    """A reusable piece of the loop.

    A state reads and writes only the :class:`~statetrain.context.run.Run` it is given; it never
    imports another state and never chooses the next state: the machine's guarded transitions do.
    ``reads``, ``writes`` and ``fires`` document the contract (and the docs list them).
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    fires: ClassVar[tuple[Event, ...]] = ()
    needs_train_data: ClassVar[bool] = False
    """Whether the state reads the training data; a machine with none runs without a train_dataset."""

    def setup(self, run: Run) -> None:
        """Build what this state needs beyond the default machinery, once per ``train()`` call.

        Called after the model, optimizer, schedule and data are prepared and before a checkpoint's
        state is loaded into them. A state that owns tensor state (a second optimizer, its schedule)
        registers it here with :meth:`Run.register_checkpointable` so checkpoints save and restore
        it; small JSON state belongs in ``run.custom_state(self.name)``, which is persisted too.
        """
        return None

    @abstractmethod
    def run(self, run: Run) -> None:
        """Do this state's work."""

    def __repr__(self) -> str:
        return f"<state {self.name}>"
