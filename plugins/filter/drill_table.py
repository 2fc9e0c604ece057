# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: drill_table
short_description: The drill suite's result records as a text table
version_added: 0.2.0
author: datagram.director developers (!UNKNOWN)
description:
  - One row per result record of C(playbooks/drill.yml), with scenario, load, sent, lost (datagrams and
    seconds of traffic), longest gap, takeover (from the fault to the first datagram forwarded by
    the new master, read from its own counters), datagrams forwarded by each director, how long
    both directors held a VIP, and the verdict.
  - A figure a record does not have (a scenario with no takeover) prints as C(-).
options:
  _input:
    description: The records, each a dict with the keys C(scenario), C(load), C(sent), C(lost), C(lost_s),
      C(longest_gap_s), C(takeover_s), C(forwarded) (director -> datagrams), C(duplicate_s) and C(ok).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Print the drill table
  ansible.builtin.debug:
    msg: "{{ __drill_records | datagram.director.drill_table }}"
"""

RETURN = r"""
_value:
  description: The table, one line per record under a header line, columns separated by two spaces.
  type: str
"""

from ansible.errors import AnsibleFilterError

COLUMNS = ("scenario", "load", "sent", "lost", "lost s", "longest gap s", "takeover s",
           "forwarded", "duplicate VIP s", "result")


def _cell(value):
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "%g" % round(value, 3)
    return str(value)


def _forwarded(value):
    if not value:
        return "-"
    return " ".join("%s=%s" % (name, _cell(count)) for name, count in sorted(value.items()))


def _row(record):
    try:
        return [_cell(record["scenario"]), _cell(record.get("load")), _cell(record.get("sent")),
                _cell(record.get("lost")), _cell(record.get("lost_s")), _cell(record.get("longest_gap_s")),
                _cell(record.get("takeover_s")), _forwarded(record.get("forwarded")),
                _cell(record.get("duplicate_s")), "ok" if record.get("ok") else "FAILED"]
    except (KeyError, AttributeError, TypeError):
        raise AnsibleFilterError("drill_table: a record must be a dict with a scenario, got %r" % (record,))


def drill_table(records):
    if not isinstance(records, (list, tuple)):
        raise AnsibleFilterError("drill_table: expects a list of records, got %r" % (records,))
    rows = [list(COLUMNS)] + [_row(record) for record in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


class FilterModule(object):
    def filters(self):
        return {"drill_table": drill_table}
