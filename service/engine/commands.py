"""Operators' commands, decided like events: the new trading state and the command's result,
as state records for the edges to write (SPEC 7).

``pause`` and ``halt`` hold a portfolio's or a world's changes (``holding``); ``resume`` lets
them go, planned once against the positions of that moment by the release check. A command
is remembered by id with the portfolio's applied events, so one read again is not applied
twice, and its result is kept in the portfolio's state for the API to report.
"""

from __future__ import annotations

from ..messages.command import OperatorCommand
from ..state.allocations import (
    COMMANDS_KEPT,
    AllocationState,
    CommandResult,
    PortfolioState,
    Record,
    TradingMode,
    TradingState,
    encode,
    portfolio_key,
    world_key,
)
from .work import Outcome, Work

MODE_OF: dict[str, TradingMode] = {"pause": "paused", "halt": "halted", "resume": "active"}
"""The trading mode each state command sets."""


class Commands:
    """Decides what an operator's command does to the state."""

    def __init__(self, state: AllocationState) -> None:
        self.state = state

    def on_command(self, command: OperatorCommand, now_ms: int) -> Work:
        state = self.state
        portfolio_id = command.portfolio_id
        if state.was_applied(portfolio_id, command.command_id):
            return Work(Outcome.DUPLICATE)
        portfolio = AllocationState.with_applied(
            state.portfolio(portfolio_id), [command.command_id]
        )
        records: list[Record] = []
        mode = MODE_OF.get(command.action)
        if mode is None:
            outcome, detail = "refused", f"{command.action} is not carried out by this version"
        elif command.world_id is None:
            before = portfolio.trading.mode
            portfolio = portfolio.model_copy(update={"trading": trading(command, mode, now_ms)})
            outcome, detail = "applied", f"portfolio {portfolio_id}: {before} -> {mode}"
        elif (portfolio_id, command.world_id) not in state.worlds:
            outcome = "refused"
            detail = f"portfolio {portfolio_id} has no world {command.world_id!r}"
        else:
            ws = state.worlds[(portfolio_id, command.world_id)]
            before = ws.trading.mode
            ws = ws.model_copy(update={"trading": trading(command, mode, now_ms)})
            records.append((world_key(portfolio_id, ws.world_id), encode(ws)))
            outcome = "applied"
            detail = f"world {ws.world_id} of {portfolio_id}: {before} -> {mode}"
        portfolio = remember(portfolio, result(command, outcome, detail, now_ms))
        records.append((portfolio_key(portfolio_id), encode(portfolio)))
        return Work(Outcome.COMMANDED, portfolio_id=portfolio_id, state=records, why=detail)


def trading(command: OperatorCommand, mode: TradingMode, now_ms: int) -> TradingState:
    return TradingState(
        mode=mode,
        command_id=command.command_id,
        by=command.requested_by,
        reason=command.reason,
        since=now_ms,
    )


def result(command: OperatorCommand, outcome: str, detail: str, now_ms: int) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        action=command.action,
        world_id=command.world_id,
        outcome="applied" if outcome == "applied" else "refused",
        detail=detail,
        requested_by=command.requested_by,
        reason=command.reason,
        requested_at=command.requested_at,
        decided_at=now_ms,
    )


def remember(portfolio: PortfolioState, decided: CommandResult) -> PortfolioState:
    kept = [*portfolio.commands, decided][-COMMANDS_KEPT:]
    return portfolio.model_copy(update={"commands": kept})
