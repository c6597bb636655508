'use strict'
// Self-test: node check.js [cases.json]
// For every case: gen -> parse must reproduce the case semantically,
// generate(parse(bytes)) must give the same bytes, and every `properties`
// object must list its keys in ascending MQTT 5 property identifier order.
const fs = require('fs')
const { properties: PROP_IDS } = require('mqtt-packet/constants')
const { genOne, toBuffers } = require('./gen')
const { parseOne } = require('./parse')

const hexOf = (v) => ({ hex: (Buffer.isBuffer(v) ? v : Buffer.from(v || '', 'utf8')).toString('hex') })
const BINARY = new Set(['payload', 'password', 'correlationData', 'authenticationData'])

// Bring a case packet into the shape the parser produces.
function normalize (p, version) {
  // PUBREL/SUBSCRIBE/UNSUBSCRIBE have fixed header flags 0010: parsed as qos 1.
  const out = { retain: false, qos: /^(pubrel|subscribe|unsubscribe)$/.test(p.cmd) ? 1 : 0, dup: false }
  if (p.cmd === 'connect') Object.assign(out, { clean: true, keepalive: 0, clientId: '' })
  if (p.cmd === 'publish') out.payload = { hex: '' }
  if (version === 5 && /^(pub(ack|rec|rel|comp)|disconnect|auth|connack)$/.test(p.cmd)) out.reasonCode = 0
  for (const [k, v] of Object.entries(p)) {
    if (k === 'protocolVersion' && p.cmd !== 'connect') continue
    if (k === 'properties') {
      const props = normProps(v)
      if (props) out.properties = props
    } else if (k === 'will') {
      out.will = { qos: 0, retain: false, ...v, payload: hexOf(v.payload) }
      if (v.properties) out.will.properties = normProps(v.properties)
      if (!out.will.properties) delete out.will.properties
    } else if (k === 'subscriptions') {
      out.subscriptions = v.map((s) => version === 5
        ? { topic: s.topic, qos: s.qos, nl: !!s.nl, rap: !!s.rap, rh: s.rh || 0 }
        : { topic: s.topic, qos: s.qos })
    } else if (BINARY.has(k)) {
      out[k] = hexOf(v)
    } else out[k] = v
  }
  return out
}

function normProps (props) {
  if (!props || Object.keys(props).length === 0) return undefined
  const out = {}
  for (const [k, v] of Object.entries(props)) {
    if (BINARY.has(k)) out[k] = hexOf(v)
    else if (k === 'subscriptionIdentifier' && Array.isArray(v) && v.length === 1) out[k] = v[0]
    else if (k === 'userProperties') {
      out[k] = {}
      for (const [n, val] of Object.entries(v)) out[k][n] = Array.isArray(val) && val.length === 1 ? val[0] : val
    } else out[k] = v
  }
  return out
}

// JSON with sorted keys, except inside `properties` where the order is the wire order and matters.
function canon (v, keep) {
  if (Array.isArray(v)) return '[' + v.map((x) => canon(x, keep)).join(',') + ']'
  if (v && typeof v === 'object') {
    const keys = keep ? Object.keys(v) : Object.keys(v).sort()
    return '{' + keys.map((k) => JSON.stringify(k) + ':' + canon(v[k], keep || k === 'properties')).join(',') + '}'
  }
  return JSON.stringify(v)
}

function checkOrder (name, props, where) {
  if (!props) return []
  const ids = Object.keys(props).map((k) => PROP_IDS[k])
  for (let i = 1; i < ids.length; i++) {
    if (!(ids[i - 1] < ids[i])) return [`${name}: ${where} keys not in ascending property id order`]
  }
  return []
}

function checkCase (c) {
  const errs = [...checkOrder(c.name, c.packet.properties, 'properties'),
    ...checkOrder(c.name, c.packet.will && c.packet.will.properties, 'will.properties')]
  const g = genOne(c)
  const parsed = parseOne(g).packet
  const exp = normalize(toBuffers(c.packet, 'packet'), g.version)
  for (const k of Object.keys(exp)) {
    if (canon(exp[k], k === 'properties') !== canon(parsed[k], k === 'properties')) {
      errs.push(`${c.name}: field ${k}: expected ${JSON.stringify(exp[k])} got ${JSON.stringify(parsed[k])}`)
    }
  }
  if (!exp.properties && parsed.properties) errs.push(`${c.name}: unexpected properties ${JSON.stringify(parsed.properties)}`)
  // Re-encode the parsed packet: must give identical bytes.
  const again = genOne({ name: c.name, version: g.version, packet: toBuffers(parsed, 'packet') })
  if (again.hex !== g.hex) errs.push(`${c.name}: re-encoding differs: ${g.hex} vs ${again.hex}`)
  return errs
}

const cases = JSON.parse(fs.readFileSync(process.argv[2] || `${__dirname}/cases.json`, 'utf8'))
let failed = 0
for (const c of cases) {
  let errs
  try { errs = checkCase(c) } catch (e) { errs = [`${c.name}: ${e.message}`] }
  for (const e of errs) console.error(e)
  if (errs.length) failed++
}
console.log(`${cases.length - failed}/${cases.length} cases OK (mqtt-packet ${require('mqtt-packet/package.json').version})`)
process.exit(failed ? 1 : 0)
