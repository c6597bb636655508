'use strict'
// Parse MQTT packet bytes with mqtt-packet.
// Input:  JSON array of { name, version, hex } from argv[2] or stdin.
// Output: JSON array of { name, packet } (Buffers as {"hex": ...}) or { name, error }.
const fs = require('fs')
const mqtt = require('mqtt-packet')
const { checkFraming } = require('./gen')

function fromBuffers (v) {
  if (Buffer.isBuffer(v)) return { hex: v.toString('hex') }
  if (Array.isArray(v)) return v.map(fromBuffers)
  if (v && typeof v === 'object') {
    const out = {}
    for (const k of Object.keys(v)) out[k] = fromBuffers(v[k])
    return out
  }
  return v
}

function parseOne (c) {
  if (typeof c.hex !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(c.hex)) throw new Error('missing or invalid hex' + (c.error ? ' (gen error: ' + c.error + ')' : ''))
  // A CONNECT sets the version itself; other packets need it from the case.
  const buf = Buffer.from(c.hex, 'hex')
  // Exactly one packet: mqtt-packet would silently swallow a trailing byte.
  checkFraming(buf, 'input')
  const parser = mqtt.parser({ protocolVersion: c.version || 4 })
  const packets = []
  let error = null
  parser.on('packet', (p) => packets.push(p))
  parser.on('error', (e) => { if (!error) error = e })
  const left = parser.parse(buf)
  if (error) throw error
  if (packets.length === 0) throw new Error('incomplete packet')
  if (packets.length > 1 || left !== 0) throw new Error('trailing bytes after first packet')
  return { name: c.name, packet: fromBuffers(packets[0]) }
}

function main () {
  const input = fs.readFileSync(process.argv[2] || 0, 'utf8')
  const cases = JSON.parse(input)
  if (!Array.isArray(cases)) throw new Error('input must be a JSON array')
  const out = cases.map((c) => {
    try {
      return parseOne(c)
    } catch (e) {
      return { name: c && c.name, error: String((e && e.message) || e) }
    }
  })
  process.stdout.write(JSON.stringify(out, null, 1) + '\n')
}

if (require.main === module) main()
module.exports = { parseOne, fromBuffers }
