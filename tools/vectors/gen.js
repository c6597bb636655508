'use strict'
// Generate MQTT packet bytes with mqtt-packet.
// Input:  JSON array of { name, packet, [version] } from argv[2] or stdin.
// Output: JSON array of { name, version, hex } or { name, error } on stdout.
const fs = require('fs')
const mqtt = require('mqtt-packet')

// {"hex": "..."} -> Buffer, recursively. userProperties values are never
// converted (a user property may legitimately be named "hex").
function toBuffers (v, key) {
  if (Buffer.isBuffer(v)) return v
  if (Array.isArray(v)) return v.map((x) => toBuffers(x, key))
  if (v && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === 'hex' && typeof v.hex === 'string') {
      if (!/^([0-9a-fA-F]{2})*$/.test(v.hex)) throw new Error('bad hex in ' + key)
      return Buffer.from(v.hex, 'hex')
    }
    if (key === 'userProperties') return v
    const out = {}
    for (const k of keys) out[k] = toBuffers(v[k], k)
    return out
  }
  return v
}

// mqtt-packet silently truncates output on some invalid inputs (e.g. a
// messageId or string length > 65535), so check the remaining length.
function checkFraming (buf, what = 'generated packet') {
  let len = 0; let mul = 1; let i = 1
  for (;;) {
    if (i >= buf.length || i > 4) throw new Error(what + ' has a malformed remaining length')
    const b = buf[i++]
    len += (b & 0x7f) * mul
    mul *= 128
    if (!(b & 0x80)) break
  }
  if (buf.length !== i + len) {
    throw new Error(`${what} is inconsistent: remaining length ${len}, got ${buf.length - i} bytes`)
  }
}

function genOne (c) {
  const packet = toBuffers(c.packet, 'packet')
  const version = c.version || packet.protocolVersion || 4
  const buf = mqtt.generate(packet, { protocolVersion: version })
  checkFraming(buf)
  return { name: c.name, version, hex: buf.toString('hex') }
}

function main () {
  const input = fs.readFileSync(process.argv[2] || 0, 'utf8')
  const cases = JSON.parse(input)
  if (!Array.isArray(cases)) throw new Error('input must be a JSON array')
  const out = cases.map((c) => {
    try {
      return genOne(c)
    } catch (e) {
      return { name: c && c.name, error: String((e && e.message) || e) }
    }
  })
  process.stdout.write(JSON.stringify(out, null, 1) + '\n')
}

if (require.main === module) main()
module.exports = { genOne, toBuffers, checkFraming }
