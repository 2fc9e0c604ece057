# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Services and captures shared by the flowtable module and callback tests."""

from __future__ import annotations

import os

FIXTURES = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'flowtable'))
SERVICES = [
    {'name': 'echo', 'vip': '198.51.100.10', 'port': 7,
     'real_servers': [{'address': '203.0.113.21'}, {'address': '203.0.113.22'}]},
    {'name': 'echo6', 'vip': '2001:db8:1::10', 'port': 7,
     'real_servers': [{'address': '2001:db8:2::21'}, {'address': '2001:db8:2::22'}]},
    {'name': 'dns', 'vip': '198.51.100.12', 'port': 53, 'reply_rewrite': 'conntrack_zones',
     'real_servers': [{'address': '203.0.113.21'}, {'address': '203.0.113.22'}]},
]
