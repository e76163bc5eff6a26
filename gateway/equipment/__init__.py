"""The equipment ledger (设备台账) and the numbers managers are judged by: availability,
intact rates, MTBF/MTTR, service levels, and the monthly report (docs/equipment.md)."""
