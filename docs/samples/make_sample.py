"""Make the sample monthly report of the demo site: a simulated October 2026.

    .venv/bin/python docs/samples/make_sample.py [DATA_DIR]

Plays a month of the example site (config/site.yaml) into a fresh data dir through the
real stages: the equipment stage (status, alarms, maintenance mode, as the health watch
and the rule engine shape them), the rule engine's ticket book and store (repairs and
planned maintenance, with their steps), and the energy stage (the meters' counters every
15 minutes). Then writes `report-2026-10.html`, `.xlsx`, `.pdf` and the Chinese
`report-2026-10.zh.html` beside this file with `gateway report`. Seeded: the same month
every run.
"""

from __future__ import annotations

import random
import shutil
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.batch import Batch  # noqa: E402
from gateway.config.loader import load_site  # noqa: E402
from gateway.energy.stage import EnergyStage  # noqa: E402
from gateway.equipment.stage import EquipmentStage  # noqa: E402
from gateway.health import DeviceHealth  # noqa: E402
from rules.alarms import Alarm, AlarmDefinition  # noqa: E402
from rules.engine import events  # noqa: E402
from rules.tickets import Kind, TicketBook, TicketRequest, TicketStore  # noqa: E402

ZONE = ZoneInfo("Asia/Shanghai")
OCT = datetime(2026, 10, 1, tzinfo=ZONE).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=ZONE).timestamp()
M, H, DAY = 60.0, 3600.0, 86400.0
COUNTERS = {"water_b1_main": ("total_volume", 3.1), "water_b1_u1": ("total_volume", 1.45),
            "water_b1_u2": ("total_volume", 1.5), "meter_b1_main": ("energy_import", 95.0),
            "meter_b1_lighting": ("energy_import", 6.0)}  # counter, mean per hour


def at(day: int, hour: float) -> float:
    return OCT + (day - 1) * DAY + hour * H


class Month:
    def __init__(self, data_dir: Path) -> None:
        self.config = load_site(ROOT / "config" / "site.yaml")
        self.now = OCT
        self.rng = random.Random(2026)
        self.data_dir = data_dir
        self.stage = EquipmentStage(self.config, data_dir, clock=lambda: self.now)
        self.book = TicketBook()
        self.tickets = TicketStore(data_dir / "tickets.db")
        self.alarms: dict[str, Alarm] = {}
        self.health: dict[str, DeviceHealth] = {}
        self.plan: list[tuple[float, object]] = []

    def later(self, when: float, step) -> None:
        self.plan.append((when, step))

    def status(self, device: str, up: bool) -> None:
        h = self.health.setdefault(device, DeviceHealth(device, offline_after=1))
        event = h.good(0.02, self.now) if up else h.failed("comm_failure", "no response", self.now)
        if event is not None:
            self.stage.observe(event)

    def alarm(self, device: str, rule: str, name: str, severity: str, active: bool, message: str = "") -> None:
        alarm = self.alarms.setdefault(f"{device}.{rule}", Alarm(AlarmDefinition(
            f"{device}.{rule}", device, severity, message or name, chatter_limit=None)))
        alarm.update(self.now, active)
        self.stage.observe(events.alarm_state(alarm, name, self.now))

    def fault(self, device: str, rule: str, name: str, severity: str, start: float, minutes: float,
              category: str, arrive: float, resolve: float, follow_up: float, trapped: bool = False) -> None:
        """An alarm for `minutes`, with its repair ticket and the ticket's steps."""
        def raise_it() -> None:
            self.alarm(device, rule, name, severity, True)
            ticket, happened = self.book.open(TicketRequest(device, rule, category=category, title=name,
                                                            trapped=trapped), self.now)
            self._tickets(happened)
            tid = ticket.id
            self.later(self.now + 2 * M, lambda: self._tickets(self.book.dispatch(tid, self.now, "调度 王", owner="维修 李工", backup="维修 赵工")))
            self.later(self.now + arrive * M, lambda: self._tickets(self.book.arrive(tid, self.now, "维修 李工")))
            self.later(self.now + resolve * M, lambda: self._tickets(self.book.resolve(tid, self.now, "维修 李工", "已修复")))
            self.later(self.now + resolve * M + follow_up * H, lambda: self._tickets(self.book.follow_up(tid, self.now, "客服 陈")))
            self.later(self.now + resolve * M + follow_up * H + M, lambda: self._tickets(self.book.close(tid, self.now, "调度 王")))
        self.later(start, raise_it)
        self.later(start + minutes * M, lambda: self.alarm(device, rule, name, severity, False))

    def planned(self, device: str, task: str, title: str, day: int, hours: float, done_after: float,
                within: float, mode: bool) -> None:
        """A preventive ticket opened at midnight and done `done_after` hours later (in
        maintenance mode for `hours` before that, if `mode`)."""
        def open_it() -> None:
            ticket, happened = self.book.open(TicketRequest(device, task, kind=Kind.PREVENTIVE, title=title,
                                                            complete_within=within * H), self.now)
            self._tickets(happened)
            tid, start = ticket.id, self.now + (done_after - hours) * H
            if mode:
                self.later(start, lambda: self.stage.observe(events.maintenance(device, True, self.now + 4 * H, self.now, by="维保 王工", reason=title)))
                self.later(start + hours * H, lambda: self.stage.observe(events.maintenance(device, False, None, self.now, by="维保 王工")))
            self.later(start, lambda: self._tickets(self.book.arrive(tid, self.now, "维保 王工")))
            self.later(start + hours * H, lambda: self._tickets(self.book.resolve(tid, self.now, "维保 王工", "按计划完成")))
            self.later(start + hours * H + 10 * M, lambda: self._tickets(self.book.close(tid, self.now, "调度 王")))
        self.later(at(day, 0), open_it)

    def _tickets(self, happened) -> None:
        for e in happened:
            self.stage.observe(events.ticket_event(e))
        for t in self.book.changed():
            self.stage.observe(events.ticket_state(t, self.now))
            self.tickets.save([t], None, self.book)

    def script(self) -> None:
        devices = [d.id for d in self.config.devices if d.enabled]
        self.later(OCT + 5, lambda: [self.status(d, True) for d in devices])
        # the booster pump trips three times (motor overload), the third time at night
        for day, hour, minutes, arrive, resolve in ((3, 7.2, 42, 9, 38), (14, 19.5, 65, 13, 60), (27, 2.1, 95, 24, 90)):
            self.fault("pump_b1_1", "pump_trip", "水泵故障停机 pump trip", "major", at(day, hour), minutes,
                       "water", arrive, resolve, self.rng.uniform(2, 30))
        # lift 1: out of service twice, passengers trapped once (rescued in 18 minutes)
        self.fault("lift_b1_1", "out_of_service", "电梯停止服务 out of service", "major", at(9, 8.4), 55,
                   "elevator", 21, 52, 20)
        self.fault("lift_b1_1", "passengers_trapped", "电梯困人 passengers trapped", "critical", at(22, 18.05), 25,
                   "elevator", 18, 24, 3, trapped=True)
        # lift 2's IoT box: a door-lock fault kept it out for a morning, the part came after lunch
        self.fault("lift_b2_1_box", "out_of_service", "电梯停止服务 out of service", "major", at(18, 7.0), 330,
                   "elevator", 35, 325, 50)
        self.fault("sump_b1_1", "high_level", "集水井高液位 high level", "minor", at(11, 3.0), 40, "drainage", 20, 45, 5)
        self.fault("ahu_b1_1", "filter_dirty", "空调箱过滤网堵塞 filter clogged", "warning", at(6, 10.0), 1500,
                   "hvac", 120, 1490, 24)
        # the emergency button's battery runs flat, the access gate loses its network
        self.later(at(20, 2), lambda: self.status("sos_b3_1201", False))
        self.later(at(21, 15), lambda: self.status("sos_b3_1201", True))
        self.later(at(8, 12), lambda: self.status("access_b1_gate", False))
        self.later(at(8, 12.6), lambda: self.status("access_b1_gate", True))
        # planned maintenance: the lift every 15 days, the water tank (done late)
        self.planned("lift_b1_1", "elevator_half_monthly", "电梯半月维保", 1, 2, 11, 24, True)
        self.planned("lift_b1_1", "elevator_half_monthly", "电梯半月维保", 16, 2, 10, 24, True)
        self.planned("lift_b2_1_box", "elevator_half_monthly", "电梯半月维保", 2, 2, 14, 24, True)
        self.planned("lift_b2_1_box", "elevator_half_monthly", "电梯半月维保", 17, 2, 13, 24, True)
        self.planned("water_tank_b1", "tank_cleaning", "1号楼二次供水水箱清洗消毒", 10, 6, 200, 168, False)
        # a software update: the gateway is down 20 minutes on the 12th
        self.later(at(12, 3), self.restart_down)
        self.later(at(12, 3 + 1 / 3), self.restart_up)
        for day in range(2, 33):
            self.later(at(day, 0.01), lambda: self.stage.tick())

    def restart_down(self) -> None:
        self.stage.tick(self.now)
        self.stage.close()

    def restart_up(self) -> None:
        self.stage = EquipmentStage(self.config, self.data_dir, clock=lambda: self.now)
        self.stage.open()
        self.health = {}
        devices = [d.id for d in self.config.devices if d.enabled]
        self.later(self.now + 5, lambda: [self.status(d, True) for d in devices])

    def run(self) -> None:
        self.stage.open()
        self.script()
        energy = EnergyStage(self.config, self.data_dir, clock=lambda: self.now)
        energy.open()
        totals = {d: self.rng.uniform(10_000, 50_000) for d in COUNTERS}
        t = OCT
        while t <= NOV + H:
            self.plan.append((t, lambda t=t: self._meters(energy, totals, t)))
            t += 15 * M
        while self.plan:
            self.plan.sort(key=lambda p: p[0])
            when, step = self.plan.pop(0)
            self.now = when
            step()
        energy.close()
        self.now = NOV + 2 * H
        self.stage.tick(self.now)
        self.stage.close()
        self.tickets.close()

    def _meters(self, energy: EnergyStage, totals: dict[str, float], t: float) -> None:
        hour = datetime.fromtimestamp(t, ZONE).hour
        shape = 0.35 if hour < 6 else (1.5 if hour in (7, 8, 19, 20, 21) else 1.0)
        for device, (point, per_hour) in COUNTERS.items():
            totals[device] += per_hour * 0.25 * shape * self.rng.uniform(0.8, 1.2)
            energy.process(Batch(device, t, (point,), [round(totals[device], 3)]))
        energy.tick(t)


def main() -> int:
    out = Path(__file__).resolve().parent
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else out / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    Month(data_dir).run()
    from gateway.cli import main as gateway

    site = str(ROOT / "config" / "site.yaml")
    for fmt, lang, name in (("html", "en", "report-2026-10.html"), ("html", "zh", "report-2026-10.zh.html"),
                            ("xlsx", "en", "report-2026-10.xlsx"), ("pdf", "zh", "report-2026-10.zh.pdf")):
        gateway(["report", "--month", "2026-10", "-c", site, "--data-dir", str(data_dir), "--format", fmt,
                 "--lang", lang, "-o", str(out / name)])
    if len(sys.argv) <= 1:
        shutil.rmtree(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
