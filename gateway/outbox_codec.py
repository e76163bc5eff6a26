"""How a record is stored in the outbox: the JSON of `Batch.to_dict` / `Event.to_dict`.

A batch's device and point names are the same poll after poll, so their JSON is made once
and kept; only the time and the values are encoded each time. A value JSON cannot hold
(bytes from a driver) is stored as its text rather than failing the whole group commit.
"""

from __future__ import annotations

import json
import math

from gateway.batch import Batch, Event, Kind

_json = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode
_CACHE_MAX = 10_000  # point sets and device names kept encoded (a site has a few hundred)
_encoded: dict[object, str] = {}  # used from the outbox thread only


def encode(item: Batch | Event) -> str:
    """The stored text of one record."""
    if type(item) is not Batch:
        return _json(item.to_dict())
    device = _encoded.get(item.device)
    points = _encoded.get(item.points)
    if device is None or points is None:
        if len(_encoded) >= _CACHE_MAX:
            _encoded.clear()
        device = _encoded[item.device] = _json(item.device)
        points = _encoded[item.points] = _json(list(item.points))
    ts = item.ts
    when = repr(ts) if type(ts) is float and math.isfinite(ts) else _json(ts)
    quality = "" if item.quality is None else f',"q":{_json(item.quality)}'
    return f'{{"d":{device},"t":{when},"p":{points},"v":{_json(item.values)}{quality}}}'


def decode(kind: int, body: str) -> Batch | Event:
    """A stored record back (also the text older versions stored, with spaces)."""
    data = json.loads(body)
    return Batch.from_dict(data) if kind == Kind.READING else Event.from_dict(data)
