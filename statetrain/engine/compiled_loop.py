"""The compiled loop: a machine's exit table turned into one Python function, one branch per state.

A generic loop that calls ``runs[name](run)`` and ``enabled()`` from a single call site hands the
interpreter a different function at that site on every state, so CPython cannot specialise the
call, and a step of the default machine pays that three times over. The compiled loop gives every
state its own call site and every exit its own test: it is generated as source from the shape of
the table (state names, how many exits each has and how many conditions each exit tests), compiled
once per shape and process, and filled per ``train()`` with the callables read out of the built
``transitions.Machine`` (its conditions, in priority order, and its destination states). So the
flow is still exactly the declared table, a custom machine is compiled the same way, and the model
``transitions`` drives is moved along each edge and read back before every state, as ``drive``
documents. :func:`statetrain.engine.driver.compiled_source` shows the code for a machine.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Condition = tuple[Callable[[], Any], bool]
"""One condition of an edge: the callable ``transitions`` calls and the result it must give."""

CompiledExit = tuple[tuple[Condition, ...], Any]
"""One edge out of a state: its conditions (all must hold; none: always taken) and the destination value."""

Shape = tuple[tuple[str, tuple[tuple[bool, ...], ...]], ...]
"""Per state: its name and, per exit, the targets of its conditions; all the generated code depends on."""


def shape_of(order: Sequence[str], exits: dict[str, list[CompiledExit]]) -> Shape:
    """What the generated code depends on: per state in ``order``, the condition targets of its takeable exits."""
    return tuple(
        (name, tuple(tuple(target for _, target in conditions) for conditions, _ in _takeable(exits[name])))
        for name in order
    )


def _takeable(edges: list[CompiledExit]) -> list[CompiledExit]:
    """The exits up to the first unconditional one: those after it can never be taken."""
    for index, (conditions, _) in enumerate(edges):
        if not conditions:
            return edges[: index + 1]
    return edges


def compile_loop(
    order: Sequence[str],
    runs: Mapping[str, Callable[[Any], None]],
    exits: dict[str, list[CompiledExit]],
    final: str,
    attribute: str,
) -> Callable[..., None]:
    """The loop for this table: ``loop(run, model, bus, enter, leave, failed, stalled)`` runs the
    machine from the state ``model`` is in until ``final`` has run."""
    factory = _factory(shape_of(order, exits), final, attribute)
    values: list[Any] = []
    for name in order:
        values.append(runs[name])
        for conditions, destination in _takeable(exits[name]):
            values.extend(func for func, _ in conditions)
            values.append(destination)
    loop: Callable[..., None] = factory(*values)
    return loop


def loop_source(shape: Shape, final: str, attribute: str) -> str:
    """The generated source of the loop factory for ``shape`` (what :func:`compile_loop` compiles)."""
    params: list[str] = []
    body: list[str] = []
    for index, (name, edges) in enumerate(shape):
        params.append(f"run_{index}")
        body += [
            f"            if name == {name!r}:",
            "                if enter in bus.active:",
            "                    run.fire(enter, state_name=name)",
            "                try:",
            f"                    run_{index}(run)",
            "                except BaseException as exc:",
            "                    failed(run, bus, name, exc)",
            "                    raise",
            "                if leave in bus.active:",
            "                    run.fire(leave, state_name=name)",
        ]
        if name == final:
            body += ["                run.engine.current_state = name", "                return"]
            continue
        first = True
        unguarded = False
        for edge, targets in enumerate(edges):
            test_names = [f"test_{index}_{edge}_{k}" for k in range(len(targets))]
            params.extend(test_names)
            params.append(f"dest_{index}_{edge}")
            move = f"model.{attribute} = dest_{index}_{edge}"
            if not targets:  # always taken; the shape ends here
                body.append("                if True:" if first else "                else:")
                body.append(f"                    {move}")
                unguarded = True
                break
            test = " and ".join(
                f"{'' if target else 'not '}{t}()" for t, target in zip(test_names, targets, strict=True)
            )
            body.append(f"                {'if' if first else 'elif'} {test}:")
            body.append(f"                    {move}")
            first = False
        if not unguarded:  # every exit guarded and none held
            body.append("                if True:" if first else "                else:")
            body.append("                    stalled(name)")
        body.append("                continue")
    lines = [
        f"def factory({', '.join(params)}):",
        "    def loop(run, model, bus, enter, leave, failed, stalled):",
        "        while True:",
        f"            name = model.{attribute}",
        *body,
        "            stalled(name, unknown=True)",
        "    return loop",
    ]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=64)
def _factory(shape: Shape, final: str, attribute: str) -> Callable[..., Callable[..., None]]:
    if not attribute.isidentifier() or keyword.iskeyword(attribute):
        raise ValueError(f"the machine's model attribute {attribute!r} is not a Python identifier")
    namespace: dict[str, Any] = {}
    code = compile(loop_source(shape, final, attribute), f"<statetrain compiled loop {len(shape)} states>", "exec")
    exec(code, namespace)  # source generated above from names and counts only
    factory: Callable[..., Callable[..., None]] = namespace["factory"]
    return factory
