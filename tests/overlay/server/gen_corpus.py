#!/usr/bin/env python3
"""Writes the seed corpora of gsoverlayd_fuzz and overlay_config_fuzz
(tests/fuzz/corpus/gsoverlayd, tests/fuzz/corpus/overlay_config) from the
protocol tables of docs/overlay.md and the config test files."""
import os, struct, shutil, sys

root = os.path.dirname(os.path.abspath(__file__))
top = os.path.normpath(os.path.join(root, '..', '..', '..'))

def header(op, overlay, txid=1, version=1):
    return struct.pack('>HBBIQ', 0x474f, version, op, txid, overlay)

def attrs(kv):
    b = bytes([len(kv)])
    for k, v in kv:
        b += bytes([len(k)]) + k.encode() + struct.pack('>H', len(v)) + v.encode()
    return b

def member(port, ip=(127, 0, 0, 1)):
    return bytes(10) + b'\xff\xff' + bytes(ip) + struct.pack('>H', port)

def record(control, payload):
    return bytes([control]) + struct.pack('>H', len(payload)) + payload

CREATE, GET, JOIN, RENEW, LEAVE, LIST, STATS = range(1, 8)
create = header(CREATE, 1234) + attrs([('KeyAttributes', 'Protocol,DataTransport'), ('Protocol', 'DT')])
seeds = {
    'create_get': record(0, create) + record(1, header(GET, 1234)),
    'conflict': record(0, create) + record(1, header(CREATE, 1234) + attrs([('Protocol', 'HC')])),
    'join_many': record(0, create) + b''.join(
        record(i & 3, header(JOIN, 1234) + member(10000 + i) + struct.pack('>IB', 1000, 8)) for i in range(6)),
    'lease_expiry': record(0, create) + record(0, header(JOIN, 1234) + member(9) + struct.pack('>IB', 1000, 8))
        + record(0x80, header(LIST, 1234)),
    'renew_leave': record(0, create) + record(1, header(RENEW, 1234) + member(5) + struct.pack('>I', 0))
        + record(1, header(LEAVE, 1234) + member(5)),
    'list_stats': record(0, create) + record(2, header(LIST, 0) + struct.pack('>Q', 0)) + record(3, header(STATS, 0)),
    'bad_version': record(0, header(GET, 1, version=2)),
    'bad_attr': record(0, header(CREATE, 7) + attrs([('Protocol', 'XY'), ('NodeAddress', ':1')])),
    'truncated': record(0, create[:-3]) + record(0, b'GO'),
    'state': b'S[state]\nFormat = 1\n[overlay]\nOverlayID = 5\nProtocol = HC\n\0' + record(0, header(GET, 5)),
}
out = os.path.join(top, 'tests', 'fuzz', 'corpus', 'gsoverlayd')
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)

out = os.path.join(top, 'tests', 'fuzz', 'corpus', 'overlay_config')
os.makedirs(out, exist_ok=True)
cfg = os.path.join(root, '..', 'config')
for sub in ('good', 'bad'):
    for n in sorted(os.listdir(os.path.join(cfg, sub))):
        if n.endswith('.conf'):
            shutil.copy(os.path.join(cfg, sub, n), os.path.join(out, sub + '_' + n))
merges = {
    'merge_ok': 'OverlayID = 1\nKeyAttributes = Protocol,HelloFast\nHelloFast = 100ms\n\n--\nMemory = 3s\n',
    'merge_refused': 'OverlayID = 1\nProtocol = HC\n\n--\nProtocol = DT\n',
    'merge_keylist': 'OverlayID = 1\nKeyAttributes = MaxPayload\n\n--\nKeyAttributes = Protocol\n',
}
for name, text in merges.items():
    with open(os.path.join(out, name), 'w') as f:
        f.write(text)
print('corpora written', file=sys.stderr)
