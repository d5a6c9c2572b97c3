// What the suite's AWS credential endpoints share (imds.js, container.js,
// sts.js; see ../README): the command line, the key pairs they hand out
// (minted by the S3 server, which then accepts exactly those), the control
// API the tests drive them with, and a log of the requests they got.
//
//   node imds.js --mint http://127.0.0.1:S3PORT [--port N] [--address A]
//                [--cert PEM --key PEM] [--log FILE]
//
// --port 0 (the default) takes a free port; "ready ADDRESS:PORT" is printed
// on stdout once listening.  Control, on the same port:
//
//   POST /_control   JSON merged into the state (below); {"reset": true}
//                    first goes back to the defaults and forgets the log
//   GET  /_control   the state
//   GET  /_control/requests   the requests received so far, as JSON
//
// State: ttl (seconds the credentials live, 3600), fail (the next N
// credential requests fail), fail_all (all of them, until false),
// fail_status (500), hang (the next N are never answered), and what each
// service adds.

'use strict'

const fs = require('node:fs')
const http = require('node:http')
const https = require('node:https')

function die(name, msg) {
  process.stderr.write(`${name}: ${msg}\n`)
  process.exit(2)
}

function parseArgs(name, argv) {
  const opts = { port: 0, address: '127.0.0.1' }
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)$/.exec(argv[i])
    if (!m || i + 1 >= argv.length) die(name, `bad argument: ${argv[i]}`)
    const value = argv[++i]
    switch (m[1]) {
      case 'port': opts.port = Number(value); break
      case 'address': opts.address = value; break
      case 'mint': opts.mint = value.replace(/\/$/, ''); break
      case 'cert': opts.cert = value; break
      case 'key': opts.key = value; break
      case 'log': opts.log = value; break
      default: die(name, `unknown option --${m[1]}`)
    }
  }
  if (!opts.mint) die(name, 'no --mint URL (the S3 server)')
  if (!!opts.cert !== !!opts.key) die(name, 'give both --cert and --key, or neither')
  return opts
}

class Service {
  constructor(name, defaults) {
    this.name = name
    this.opts = parseArgs(name, process.argv.slice(2))
    this.defaults = {
      ttl: 3600,
      fail: 0,
      fail_all: false,
      fail_status: 500,
      hang: 0,
      ...defaults,
    }
    this.state = { ...this.defaults }
    this.requests = []
    this.minted = [] // the access key ids handed out, oldest first
    this.hanging = []
    this.logStream = this.opts.log ? fs.createWriteStream(this.opts.log, { flags: 'a' }) : null
  }

  // a key pair from the S3 server, living ttl seconds
  async mint(ttl) {
    const res = await fetch(`${this.opts.mint}/_replay/credentials?ttl=${ttl ?? this.state.ttl}`, {
      method: 'POST',
    })
    if (res.status !== 200) throw new Error(`minting: HTTP ${res.status}`)
    const c = await res.json()
    this.minted.push(c.AccessKeyId)
    return c
  }

  // whether this credential request is to fail (or hang) by the state
  outcome() {
    if (this.state.hang > 0) {
      this.state.hang--
      return 'hang'
    }
    if (this.state.fail_all) return 'fail'
    if (this.state.fail > 0) {
      this.state.fail--
      return 'fail'
    }
    return 'ok'
  }

  record(req, body, extra) {
    const entry = {
      time: new Date().toISOString(),
      method: req.method,
      url: req.url,
      headers: req.headers,
      body,
      ...extra,
    }
    this.requests.push(entry)
    if (this.requests.length > 10000) this.requests.shift()
    if (this.logStream) this.logStream.write(`${JSON.stringify({ ...entry, headers: undefined })}\n`)
  }

  send(res, status, type, body, headers = {}) {
    const buf = Buffer.from(body)
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Length': buf.length,
      Date: new Date().toUTCString(),
      ...headers,
    })
    res.end(buf)
  }

  control(req, res, body) {
    if (req.method === 'GET' && req.url === '/_control/requests') {
      return this.send(res, 200, 'application/json', JSON.stringify(this.requests))
    }
    if (req.method === 'GET' && req.url === '/_control/minted') {
      return this.send(res, 200, 'application/json', JSON.stringify(this.minted))
    }
    if (req.method === 'GET') {
      return this.send(res, 200, 'application/json', JSON.stringify(this.state))
    }
    let change
    try {
      change = JSON.parse(body || '{}')
    } catch (err) {
      return this.send(res, 400, 'text/plain', `bad JSON: ${err.message}\n`)
    }
    if (change.reset) {
      this.state = { ...this.defaults }
      this.requests = []
      this.minted = []
      for (const r of this.hanging.splice(0)) r.destroy()
      delete change.reset
    }
    Object.assign(this.state, change)
    return this.send(res, 200, 'application/json', JSON.stringify(this.state))
  }

  // handler(req, res, body): the service; errors become a 500
  listen(handler) {
    const serve = (req, res) => {
      const chunks = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        if (req.url === '/_control' || req.url.startsWith('/_control/')) {
          return this.control(req, res, body)
        }
        Promise.resolve(handler(req, res, body)).catch((err) => {
          process.stderr.write(`${this.name}: ${err.stack || err}\n`)
          if (!res.headersSent) this.send(res, 500, 'text/plain', 'internal error\n')
        })
      })
    }
    const server = this.opts.cert
      ? https.createServer(
          { cert: fs.readFileSync(this.opts.cert), key: fs.readFileSync(this.opts.key) },
          serve
        )
      : http.createServer(serve)
    // every answer closes the connection, as nginx's client asks
    server.keepAliveTimeout = 1000
    server.listen(this.opts.port, this.opts.address, () => {
      const a = server.address()
      process.stdout.write(`ready ${a.address}:${a.port}\n`)
    })
    for (const sig of ['SIGTERM', 'SIGINT']) {
      process.on(sig, () => process.exit(0))
    }
    return server
  }

  // a request never answered, until the state is reset or the server ends
  hang(req) {
    this.hanging.push(req.socket)
  }
}

// "2024-01-01T00:00:00Z", as AWS writes its times
function iso(date) {
  return new Date(date).toISOString().replace(/\.\d+Z$/, 'Z')
}

module.exports = { Service, iso }
