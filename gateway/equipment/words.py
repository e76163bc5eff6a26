"""The report's and the ledger export's words in English and Chinese, and how a value of
each kind is written (percentages, hours, minutes, local times)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

LANGUAGES = ("en", "zh")

WORDS: dict[str, dict[str, str]] = {
    "en": {
        # report
        "report": "Monthly equipment and service report", "generated": "generated",
        "timezone": "time zone", "open_month": "month not over: figures up to {until}",
        "sources": "Sources", "definitions": "Definitions: docs/equipment.md",
        "availability": "availability", "site_availability": "site availability",
        "failures": "failures", "mtbf": "MTBF (h)", "mttr": "MTTR (h)",
        "arrival_sla": "arrival within SLA", "follow_up_48h": "follow-up within 48 h",
        "planned_on_time": "planned maintenance on time", "patrol_rate": "patrol checkpoints visited",
        "alarms_raised": "alarms raised", "groups_below": "intact-rate groups below target",
        "equipment": "Equipment", "alarms": "Alarms", "service": "Service",
        "patrol": "Patrols", "energy": "Energy and water", "warranty": "Warranties",
        "by_system": "By system", "by_building": "By building", "devices_table": "Devices",
        "groups": "Intact rates", "worst": "Devices that fail most (repair or retire?)",
        "outages": "Periods out of service and why", "failure_list": "Failures",
        "daily_availability": "Daily availability", "daily_intact": "Daily intact rate",
        "alarms_per_day": "Alarms per day", "alarms_by_category": "Alarms by category and severity",
        "downtime_by_system": "Downtime by system and reason (h)",
        "arrival_by_priority": "Arrival within SLA by priority", "follow_up": "Follow-up (回访) within 48 h",
        "response_times": "Response times (minutes from opening)", "planned": "Planned maintenance",
        "escalations": "Escalations", "tickets": "Tickets opened this month",
        "patrol_plans": "Patrol compliance", "no_patrol": "No patrol plans.",
        "meters": "Meters", "meter_groups": "Master and sub-meters", "no_energy": "No meter data.",
        "no_failures": "No failures this month.", "no_outages": "No device was out of service.",
        "no_tickets": "No tickets this month.", "no_alarms": "No alarms this month.",
        "no_groups": "No intact-rate groups (kpi.groups in site.yaml).",
        "no_warranty": "No warranty ended or ending soon.", "more_rows": "{n} more rows in the xlsx report",
        "target": "target", "site": "site", "total": "total",
        # columns
        "system": "system", "building": "building", "device": "device", "name": "name",
        "devices": "devices", "observed_h": "observed (h)", "up_h": "up (h)",
        "maintenance_h": "maintenance (h)", "fault_h": "fault (h)", "offline_h": "offline (h)",
        "unknown_h": "unknown (h)", "down_h": "down (h)", "group": "group", "rate": "rate",
        "days_below": "days below target", "below": "below target", "met_target": "target met", "start": "start", "end": "end",
        "duration_h": "duration (h)", "reasons": "why", "alarm_names": "alarms",
        "category": "category", "critical": "critical", "major": "major", "minor": "minor",
        "warning": "warning", "priority": "priority", "judged": "judged", "met": "met",
        "late": "late", "pending": "pending", "measure": "measure", "n": "tickets",
        "mean_min": "mean (min)", "p90_min": "p90 (min)", "accept": "to accept",
        "arrive": "to arrive", "resolve": "to resolve", "escalated_tickets": "tickets escalated",
        "escalation_levels": "escalation levels", "breached_tickets": "tickets with a breached clock",
        "on_time": "on time", "overdue": "overdue", "open": "open", "cancelled": "cancelled",
        "ticket": "ticket", "kind": "kind", "title": "title", "opened": "opened",
        "accepted": "accepted", "arrived": "arrived", "resolved": "resolved",
        "followed_up": "followed up", "closed": "closed", "status": "status",
        "arrival": "arrival", "plan": "plan", "rounds_expected": "rounds due",
        "rounds_done": "rounds done", "checkpoints_expected": "checkpoints due",
        "checkpoints_visited": "checkpoints visited", "missed": "missed",
        "meter": "meter", "counter": "counter", "commodity": "commodity", "unit": "unit",
        "consumption": "consumption", "estimated_share": "estimated share", "flags": "flags",
        "master_total": "master total", "members_total": "sub-meter sum", "loss": "loss",
        "loss_rate": "loss rate", "vendor": "vendor", "model": "model", "serial": "serial",
        "warranty_end": "warranty end", "warranty_state": "state", "ended": "ended",
        "ends_in": "ends in {days} days", "location": "location", "purchase_date": "purchased",
        "commissioned": "commissioned", "entry": "entry", "time": "time", "what": "what",
        "ref": "about", "details": "details", "hash": "hash", "state_now": "month",
        "last_maintenance": "last maintenance", "failures_month": "failures this month",
        # states and reasons
        "up": "up", "maintenance": "maintenance", "fault": "fault", "offline": "offline",
        "unknown": "unknown", "dispatched": "dispatched", "on_site": "on site", "corrective": "repair", "preventive": "planned",
        "urgent": "urgent", "normal": "normal", "all": "all",
        "equipment_ledger": "equipment ledger", "assets": "assets", "history": "history",
    },
    "zh": {
        "report": "设备与服务月报", "generated": "生成时间", "timezone": "时区",
        "open_month": "本月未结束: 数据截至 {until}", "sources": "数据来源",
        "definitions": "指标定义: docs/equipment.md",
        "availability": "可用率", "site_availability": "全站设备可用率", "failures": "故障次数",
        "mtbf": "平均故障间隔 MTBF (小时)", "mttr": "平均修复时间 MTTR (小时)",
        "arrival_sla": "到场及时率", "follow_up_48h": "48小时回访率",
        "planned_on_time": "计划保养按时完成率", "patrol_rate": "巡检点到位率",
        "alarms_raised": "告警次数", "groups_below": "完好率未达标分组",
        "equipment": "设备", "alarms": "告警", "service": "服务", "patrol": "巡检",
        "energy": "能耗与用水", "warranty": "保修", "by_system": "按系统", "by_building": "按楼栋",
        "devices_table": "设备明细", "groups": "完好率", "worst": "故障最多的设备 (维修或报废候选)",
        "outages": "停用时段及原因", "failure_list": "故障记录", "daily_availability": "每日可用率",
        "daily_intact": "每日完好率", "alarms_per_day": "每日告警", "alarms_by_category": "告警按类别和级别",
        "downtime_by_system": "各系统停用时长及原因 (小时)",
        "arrival_by_priority": "按优先级的到场及时率", "follow_up": "48小时内回访",
        "response_times": "响应时间 (自开单起, 分钟)", "planned": "计划保养", "escalations": "升级",
        "tickets": "本月工单", "patrol_plans": "巡检完成情况", "no_patrol": "无巡检计划。",
        "meters": "分表", "meter_groups": "总表与分表", "no_energy": "无计量数据。",
        "no_failures": "本月无故障。", "no_outages": "本月无设备停用。", "no_tickets": "本月无工单。",
        "no_alarms": "本月无告警。", "no_groups": "未配置完好率分组 (site.yaml 的 kpi.groups)。",
        "no_warranty": "无已过保或即将过保的设备。", "more_rows": "另有 {n} 行见 xlsx 报表",
        "target": "目标", "site": "全站", "total": "合计",
        "system": "系统", "building": "楼栋", "device": "设备编号", "name": "名称",
        "devices": "设备数", "observed_h": "监测时长 (小时)", "up_h": "正常 (小时)",
        "maintenance_h": "维护 (小时)", "fault_h": "故障 (小时)", "offline_h": "离线 (小时)",
        "unknown_h": "未知 (小时)", "down_h": "停用 (小时)", "group": "分组", "rate": "比率",
        "days_below": "未达标天数", "below": "未达标", "met_target": "达标", "start": "开始", "end": "结束",
        "duration_h": "时长 (小时)", "reasons": "原因", "alarm_names": "告警",
        "category": "类别", "critical": "紧急", "major": "重要", "minor": "次要", "warning": "提示",
        "priority": "优先级", "judged": "已判定", "met": "达标", "late": "超时", "pending": "待定",
        "measure": "指标", "n": "工单数", "mean_min": "平均 (分钟)", "p90_min": "P90 (分钟)",
        "accept": "接单", "arrive": "到场", "resolve": "修复", "escalated_tickets": "升级工单数",
        "escalation_levels": "升级次数", "breached_tickets": "超时工单数", "on_time": "按时",
        "overdue": "逾期未完成", "open": "进行中", "cancelled": "已取消", "ticket": "工单号",
        "kind": "类型", "title": "标题", "opened": "开单", "accepted": "接单", "arrived": "到场",
        "resolved": "修复", "followed_up": "回访", "closed": "关闭", "status": "状态",
        "arrival": "到场", "plan": "计划", "rounds_expected": "应巡次数", "rounds_done": "完成次数",
        "checkpoints_expected": "应到点数", "checkpoints_visited": "实到点数", "missed": "漏检",
        "meter": "表号", "counter": "计量点", "commodity": "类别", "unit": "单位",
        "consumption": "用量", "estimated_share": "估算占比", "flags": "标记",
        "master_total": "总表用量", "members_total": "分表合计", "loss": "损耗", "loss_rate": "损耗率",
        "vendor": "厂家", "model": "型号", "serial": "序列号", "warranty_end": "保修截止",
        "warranty_state": "状态", "ended": "已过保", "ends_in": "{days} 天后过保",
        "location": "位置", "purchase_date": "购置日期", "commissioned": "投运",
        "entry": "序号", "time": "时间", "what": "事项", "ref": "关联", "details": "详情",
        "hash": "校验", "state_now": "本月", "last_maintenance": "最近保养",
        "failures_month": "本月故障",
        "up": "正常", "maintenance": "维护", "fault": "故障", "offline": "离线", "unknown": "未知", "dispatched": "已派单", "on_site": "已到场",
        "corrective": "维修", "preventive": "计划保养", "urgent": "紧急", "normal": "一般",
        "all": "全部", "equipment_ledger": "设备台账", "assets": "设备信息", "history": "履历",
    },
}

# Ledger entry kinds as people read them.
KIND_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "commissioned": "commissioned (first good read)", "online": "online", "offline": "offline",
        "alarm_raised": "alarm raised", "alarm_cleared": "alarm cleared",
        "maintenance_on": "maintenance mode on", "maintenance_off": "maintenance mode off",
        "ticket_opened": "ticket opened", "ticket_dispatched": "ticket dispatched",
        "ticket_arrived": "technician on site", "ticket_resolved": "ticket resolved",
        "ticket_followed_up": "followed up", "ticket_closed": "ticket closed",
        "ticket_cancelled": "ticket cancelled", "ticket_recurred": "fault recurred",
        "ticket_escalated": "ticket escalated", "ticket_sla_breached": "SLA breached",
        "maintenance_done": "maintenance done", "meter_replaced": "meter replaced",
        "meter_reset": "meter reset", "meter_jump": "meter jump",
        "warranty_ending": "warranty ends soon", "warranty_ended": "warranty ended",
    },
    "zh": {
        "commissioned": "投运 (首次读数正常)", "online": "上线", "offline": "离线",
        "alarm_raised": "告警", "alarm_cleared": "告警恢复", "maintenance_on": "进入维护",
        "maintenance_off": "退出维护", "ticket_opened": "开单", "ticket_dispatched": "派单",
        "ticket_arrived": "到场", "ticket_resolved": "修复", "ticket_followed_up": "回访",
        "ticket_closed": "关单", "ticket_cancelled": "撤单", "ticket_recurred": "故障复发",
        "ticket_escalated": "升级", "ticket_sla_breached": "超时", "maintenance_done": "保养完成",
        "meter_replaced": "换表", "meter_reset": "表计清零", "meter_jump": "表计跳变",
        "warranty_ending": "即将过保", "warranty_ended": "已过保",
    },
}

SYSTEM_NAMES = {
    "zh": {"elevator": "电梯", "water_supply": "供水", "drainage": "排水", "hvac": "暖通空调",
           "power": "配电", "fire": "消防", "access": "门禁", "lighting": "照明",
           "emergency": "紧急呼叫", "patrol": "巡更", "energy": "能耗", "kpi": "完好率", "other": "其他",
           "electricity": "电", "water": "水", "gas": "燃气", "heat": "热"},
    "en": {"water_supply": "water supply", "hvac": "HVAC", "kpi": "intact rate"},
}


class Words:
    """One language's words and formats."""

    def __init__(self, lang: str, timezone: str) -> None:
        if lang not in WORDS:
            raise ValueError(f"language {lang!r}: one of {', '.join(LANGUAGES)}")
        self.lang = lang
        self.zone = ZoneInfo(timezone)

    def __call__(self, key: str, **values: Any) -> str:
        text = WORDS[self.lang].get(key, key)
        return text.format(**values) if values else text

    def kind(self, kind: str) -> str:
        return KIND_NAMES[self.lang].get(kind, kind)

    def system(self, name: str) -> str:
        return SYSTEM_NAMES[self.lang].get(name, name)

    def time(self, ts: float | None, seconds: bool = False) -> str:
        if ts is None:
            return ""
        return datetime.fromtimestamp(ts, self.zone).strftime(
            "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def text(self, kind: str, value: Any) -> str:
        """A cell as text: `pct` rates, `hours` and `minutes` to two places, `time` local."""
        if value is None or value == "":
            return "" if kind in ("text", "time") else "–"
        if kind == "pct":
            return f"{rounded(value * 100, 2)}%"
        if kind in ("hours", "minutes", "number"):
            return rounded(value, 2)
        if kind == "int":
            return str(int(value))
        if kind == "time":
            return self.time(value)
        return str(value)


def rounded(value: float, places: int) -> str:
    """Half up, as figures are checked by hand (99.125 % is 99.13 %, not the float's 99.12)."""
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
