"""Who sent a command, and whether that sender may send that kind of command.

The gateway can only name a sender someone else vouches for:

- the central platform's MQTT users: MQTT 3.1.1 does not tell a subscriber who published
  a message, so with `upstream.commands.allow` a command must arrive on
  `<commands topic>/<MQTT user>`, and the broker's ACL (`pattern write .../commands/%u`)
  lets each user publish only on the topic named after itself. The topic level is then
  as trustworthy as the broker's ACL, and no more (docs/commands.md, "Who may command").
- site engineers on the box: the kernel names the Unix user at the other end of the
  control socket (SO_PEERCRED), audited as `cli:<user>`.
- whoever logged in to the local status page (gateway/web) with a password from
  `web.password_file`: the login the password belongs to, audited as `web:<login>`.

A command's own `by` field is what the operator says about themselves: audited as
`who`, never used to decide.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field
from typing import Literal

from gateway.config.models import CommandAllow

# The kind each command type belongs to: the keys of `upstream.commands.allow`.
KIND_OF = {
    "write": "write",
    "device_status": "status",
    "reload": "reload",
    "ack_alarm": "ack",
    "shelve_alarm": "shelve",
    "unshelve_alarm": "shelve",
    "alarm_service": "alarm_service",
    "update_ticket": "ticket",
    "maintenance": "maintenance",
    "meter_reading": "meter",
    "meter_replace": "meter",
    "meter_snapshot": "meter",
}
KINDS = tuple(CommandAllow.model_fields)

Channel = Literal["mqtt", "upstream", "cli", "web"]
_NAMED = ("mqtt", "cli", "web")  # channels whose audit name says the channel


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a command came from, as far as something other than its payload can tell.

    `mqtt`: a principal topic (`name` is the MQTT user or client id the broker vouches
    for); `upstream`: the plain commands topic, sender unknown (`name` is our own
    connection); `cli`: the control socket (`name` the Unix user, `groups` its groups);
    `web`: the status page (`name` the login whose password was given).
    """

    channel: Channel
    name: str
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def via(self) -> str:
        """How the audit log names the channel: `mqtt:<user>`, `cli:<user>`, `web:<login>`,
        or the name."""
        return f"{self.channel}:{self.name}" if self.channel in _NAMED else self.name

    @classmethod
    def of_via(cls, via: str) -> Caller:
        """A caller from an audit name (`cli:ops`, `mqtt:ops`, `web:admin`, else a
        connection's name)."""
        channel, _, name = via.partition(":")
        if name and channel in _NAMED:
            return cls(channel, name)  # type: ignore[arg-type]
        return cls("upstream", via)


def unix_caller(uid: int, gid: int) -> Caller:
    """The control socket's peer: its login name (`uid:<n>` without one) and every group
    it belongs to (primary and supplementary), by name."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Caller("cli", f"uid:{uid}", _group_names([gid]))
    try:
        gids = os.getgrouplist(entry.pw_name, gid)
    except OSError:
        gids = [gid]
    return Caller("cli", entry.pw_name, _group_names(gids))


def _group_names(gids: list[int]) -> frozenset[str]:
    names = set()
    for number in gids:
        try:
            names.add(grp.getgrgid(number).gr_name)
        except KeyError:
            names.add(str(number))
    return frozenset(names)


class CommandAccess:
    """Decides per kind of command from `upstream.commands.allow`; None allows everything
    (the site has not restricted commands: the broker's ACL on the commands topic and the
    control socket's file mode are then the only gates)."""

    def __init__(self, allow: CommandAllow | None, commands_topic: str = "") -> None:
        self.allow = allow
        self.commands_topic = commands_topic

    @property
    def restricted(self) -> bool:
        return self.allow is not None

    def refusal(self, command_type: str | None, caller: Caller) -> str | None:
        """Why `caller` may not send a command of this type; None when it may.

        An unknown type is left to the parser, which refuses it with the known types.
        """
        if self.allow is None:
            return None
        if caller.channel == "upstream":
            return (
                f"commands on {self.commands_topic or 'the commands topic'} are refused: "
                "upstream.commands.allow is set, so a command must be sent on "
                f"{self.commands_topic or '<commands topic>'}/<your MQTT user>, where the "
                "broker's ACL vouches for the sender"
            )
        kind = KIND_OF.get(command_type or "")
        if kind is None:
            return None
        allowed: list[str] = getattr(self.allow, kind)
        if any(_matches(entry, caller) for entry in allowed):
            return None
        return (
            f"{caller.via} may not send {command_type} commands: not listed in "
            f"upstream.commands.allow.{kind}"
        )


def _matches(entry: str, caller: Caller) -> bool:
    """Whether one allow-list entry names this caller: a bare name an MQTT user or client
    id; `cli:<user>`, `cli:@<group>` or `cli:*` a local user; `web:<login>` or `web:*` a
    status page login."""
    if caller.channel == "mqtt":
        return not entry.startswith(("cli:", "web:")) and entry == caller.name
    if caller.channel == "web":
        return entry in ("web:*", f"web:{caller.name}")
    if caller.channel != "cli" or not entry.startswith("cli:"):
        return False
    who = entry.removeprefix("cli:")
    if who == "*":
        return True
    if who.startswith("@"):
        return who[1:] in caller.groups
    return who == caller.name
