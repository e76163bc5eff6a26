"""What the gateway computes at the edge, between a reading and the outbox: the energy
stage (consumption, rollups, losses) and then the rule engine (derived points, alarms,
tickets), as one stage of the pipeline.

Energy first, because its rollups, loss rates and night flows are readings the rules
read (a loss alarm, a night leak): every batch the energy stage produces is evaluated by
the rules in the same pass. Derived points the rules produce are not fed back: the
engine has already evaluated what reads them.

The patrol stage (gateway/patrol) comes last: it reads visits out of checkpoint devices'
readings and judges patrol rounds on its own timer, raising a missed checkpoint's alarm
through the rule engine. The equipment stage (gateway/equipment) keeps the ledger from
every event the pipeline stores and sends each closed day's KPIs; its intact-rate alarms go
through the engine as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.batch import Batch, Event
from gateway.config.models import SiteConfig
from gateway.energy.stage import EnergyStage
from gateway.equipment.stage import EquipmentStage
from gateway.patrol.stage import PatrolStage
from rules.engine.engine import RuleEngine
from rules.engine.runner import RuleRunner

log = structlog.get_logger(__name__)

ENERGY_TICK = 5.0  # seconds: group periods and night windows close within this of their end
PATROL_TICK = 1.0  # seconds: a patrol round is judged within this of its end
EQUIPMENT_TICK = 5.0  # seconds: a closed day's KPIs and the ledger's events go out within this

Output = list[Batch | Event]
Emit = Callable[[Output], None]


class EdgeStages:
    """The energy stage and the rule engine over one configuration and data dir.

    Built (and so compiled) before anything stops on a reload: a configuration whose
    rules or meters cannot run raises ValueError and changes nothing.
    """

    def __init__(self, config: SiteConfig, data_dir: Path, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.energy = EnergyStage(config, data_dir, clock=clock)
        self.rules = RuleEngine(config, data_dir, clock=clock)
        # patrols raise their missed-checkpoint alarms through the engine (docs/patrols.md)
        self.patrol = PatrolStage(config, data_dir, clock=clock, alarms=self.rules)
        self._patrol_task: asyncio.Task[None] | None = None
        # the equipment ledger follows every event (the daemon makes `observe` a pipeline
        # listener); its intact-rate alarms go through the engine too (docs/equipment.md)
        self.equipment = EquipmentStage(config, data_dir, clock=clock, alarms=lambda: self.rules)
        self._equipment_task: asyncio.Task[None] | None = None
        self._tick = config.rules.tick
        self._runner: RuleRunner | None = None
        self._energy_task: asyncio.Task[None] | None = None
        self._emit: Emit | None = None

    def process(self, batch: Batch) -> Output:
        """One poll: what it caused in energy (and what that caused in the rules), then in
        the rules."""
        return (self.evaluate(self.energy.process(batch)) + self.rules.process(batch)
                + self.patrol.process(batch))

    def evaluate(self, items: Output) -> Output:
        """Energy outputs with what their batches cause in the rules, in order."""
        out: Output = []
        for item in items:
            out.append(item)
            if isinstance(item, Batch):
                out += self.rules.process(item)
        return out

    async def start(self, emit: Emit) -> None:
        """Restore both stages (what ran out while down is emitted now), then run their timers.

        The engine opens before the energy stage's restored outputs (a night window or a
        group period that ended while down) are evaluated: the rules need their state.
        """
        self._emit = emit
        measured = self.energy.open()
        emit(self.rules.open())
        emit(self.evaluate(measured))
        emit(self.patrol.open())  # after the engine: a round missed while down raises there
        emit(self.equipment.open())  # after the engine too: its intact-rate alarms
        self._runner = RuleRunner(self.rules, lambda item: emit([item]), self._tick)
        await self._runner.start()
        self._energy_task = self._every(
            ENERGY_TICK, "energy", lambda: self.evaluate(self.energy.tick()))
        self._patrol_task = self._every(PATROL_TICK, "patrol", self.patrol.tick)
        self._equipment_task = self._every(EQUIPMENT_TICK, "equipment", self.equipment.tick)

    def _every(self, seconds: float, name: str, tick: Callable[[], Output]) -> asyncio.Task[None]:
        """A stage's timer: its outputs emitted every `seconds`; a bug costs one tick."""
        emit = self._emit
        assert emit is not None

        async def forever() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    emit(tick())
                except Exception as exc:
                    log.exception("stage tick failed", stage=name, error=repr(exc))

        return asyncio.create_task(forever(), name=name)

    async def stop(self) -> None:
        """Stop the timers, save and close the stages."""
        if self._equipment_task is not None:
            await _cancelled(self._equipment_task)
            self._equipment_task = None
            if self._emit is not None:
                try:  # what the ledger has not handed on yet goes out now, not at the next start
                    self._emit(self.equipment.tick())
                except Exception as exc:
                    log.exception("stage tick failed", stage="equipment", error=repr(exc))
        if self._patrol_task is not None:
            await _cancelled(self._patrol_task)
            self._patrol_task = None
        if self._energy_task is not None:
            await _cancelled(self._energy_task)
            self._energy_task = None
        if self._runner is not None:
            await self._runner.stop()
            self._runner = None
        for stage in (self.energy, self.rules, self.patrol, self.equipment):  # one failing must not keep another open
            try:
                stage.close()
            except Exception as exc:
                log.exception("closing a stage failed", stage=type(stage).__name__,
                              error=repr(exc))

    def status(self) -> dict[str, object]:
        """What `gateway status` shows of the rules and the meters."""
        return {
            "rules": self.rules.stats(),
            "alarms": self.rules.alarms(active_only=True),
            "tickets": self.rules.tickets(open_only=True),
            "maintenance": self.rules.maintenance_modes(),
            "energy": self.energy.stats(),
            "patrol": self.patrol.stats(),
            "equipment": self.equipment.status(),
        }


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel a stage's timer and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
