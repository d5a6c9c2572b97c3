#!/usr/bin/env node
// Local S3 for the ngx_replay_module tests and demo: @20minutes/s3rver on
// 127.0.0.1, filesystem storage, SigV4/SigV2 signatures really checked
// (allowMismatchedSignatures stays false).  See README.md in this directory.
//
// usage: node server.js [--port N] [--address A] [--directory DIR]
//                       [--bucket NAME]... [--access-key ID --secret-key SECRET]
//                       [--region R] [--log FILE] [--public-bucket NAME]...
// Environment fallbacks: PORT, S3_ADDRESS, S3_DIR, S3_BUCKETS (comma list),
// S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (default us-east-1), S3_LOG,
// S3_PUBLIC_BUCKETS (comma list).
// Buckets are private, as on AWS: a request without a signature gets 403
// AccessDenied unless its bucket is one of the --public-bucket ones (which
// are also created).
// Prints "ready <address>:<port>" on stdout once listening.

'use strict'

// Debian 12's node is 18; @koa/router 15 (under s3rver 5) calls ES2023's
// Array.prototype.toReversed, which came with node 20.  The only such call
// in the installed packages (t/services/s3/README.md).
if (!Array.prototype.toReversed) {
  Object.defineProperty(Array.prototype, 'toReversed', {
    value: function toReversed() { return Array.prototype.slice.call(this).reverse() },
    writable: true,
    configurable: true,
  })
}

const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')

const S3rver = require('@20minutes/s3rver')
const AWSAccount = require('@20minutes/s3rver/lib/models/account')
const FilesystemStore = require('@20minutes/s3rver/lib/stores/filesystem')
const S3Object = require('@20minutes/s3rver/lib/models/object')
const S3Error = require('@20minutes/s3rver/lib/models/error')

function die(msg) {
  process.stderr.write(`s3 server: ${msg}\n`)
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { buckets: [], publicBuckets: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a)
    if (!m) {
      // bare positional: PORT then DIR
      if (opts.port === undefined) opts.port = a
      else if (opts.directory === undefined) opts.directory = a
      else die(`unexpected argument: ${a}`)
      continue
    }
    const name = m[1]
    let value = m[2]
    if (value === undefined) {
      if (i + 1 >= argv.length) die(`--${name} needs a value`)
      value = argv[++i]
    }
    switch (name) {
      case 'port': opts.port = value; break
      case 'address': opts.address = value; break
      case 'directory': case 'dir': opts.directory = value; break
      case 'bucket': opts.buckets.push(value); break
      case 'access-key': opts.accessKey = value; break
      case 'secret-key': opts.secretKey = value; break
      case 'log': opts.log = value; break
      case 'region': opts.region = value; break
      case 'public-bucket': opts.publicBuckets.push(value); break
      default: die(`unknown option --${name}`)
    }
  }
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const env = process.env

const port = Number(opts.port ?? env.PORT ?? 4568)
const address = opts.address ?? env.S3_ADDRESS ?? '127.0.0.1'
const directory = path.resolve(opts.directory ?? env.S3_DIR ?? die('no --directory / S3_DIR'))
const buckets = opts.buckets.length
  ? opts.buckets
  : (env.S3_BUCKETS ?? 'replays').split(',').filter(Boolean)
const accessKey = opts.accessKey ?? env.S3_ACCESS_KEY
const secretKey = opts.secretKey ?? env.S3_SECRET_KEY
const logFile = opts.log ?? env.S3_LOG
const region = opts.region ?? env.S3_REGION ?? 'us-east-1'
const publicBuckets = new Set(
  opts.publicBuckets.length
    ? opts.publicBuckets
    : (env.S3_PUBLIC_BUCKETS ?? '').split(',').filter(Boolean)
)
for (const b of publicBuckets) {
  if (!buckets.includes(b)) buckets.push(b)
}

if (!Number.isInteger(port) || port <= 0 || port > 65535) die(`bad port: ${opts.port ?? env.PORT}`)
if (!!accessKey !== !!secretKey) die('give both --access-key and --secret-key, or neither')

// s3rver verifies every signed request against a hard-coded account whose
// only key pair is S3RVER/S3RVER.  Replace it with ours when given, so that
// exactly one key pair is valid.
if (accessKey) {
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER')
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey)
}

fs.mkdirSync(directory, { recursive: true })

// ---------------------------------------------------------------------------
// Faithful key storage.
//
// Stock s3rver stores key "a/b/c" as DIR/bucket/a/b/c._S3rver_object through
// path.join(), which normalises the key: "a//b" and "a/./b" alias "a/b",
// "/x" aliases "x", and "../other/x" in bucket "replays" reads bucket
// "other" (it even resolves %2E%2E).  Real S3 keeps keys verbatim, so we
// encode each key segment into a safe file name instead:
//   "&" -> "&26", NUL -> "&00", a "." or ".." segment -> "&2E" / "&2E&2E",
//   an empty segment -> "&-", and a segment longer than SEG_MAX bytes is cut
//   into chunks, every chunk but the last ending in "&+" (ext4 names are at
//   most 255 bytes, and a 1024-byte key may have no "/").
// Only the on-disk layout changes; the HTTP side is untouched.
const SEG_MAX = 200
const OBJECT_SUFFIX = '._S3rver_object'

function escapeSegment(seg) {
  if (seg === '') return '&-'
  const s = seg.replace(/&/g, '&26').replace(/\0/g, '&00')
  return s === '.' || s === '..' ? s.replace(/\./g, '&2E') : s
}

function chunkSegment(enc) {
  if (Buffer.byteLength(enc) <= SEG_MAX) return [enc]
  // tokens: escape sequences stay whole, and never split a UTF-8 sequence
  const tokens = enc.match(/&[0-9A-F]{2}|&-|[\s\S]/gu)
  const chunks = []
  let cur = ''
  for (const t of tokens) {
    if (Buffer.byteLength(cur + t) > SEG_MAX) {
      chunks.push(cur)
      cur = ''
    }
    cur += t
  }
  chunks.push(cur)
  return chunks.map((c, i) => {
    const safe = c === '.' || c === '..' ? c.replace(/\./g, '&2E') : c
    return i < chunks.length - 1 ? `${safe}&+` : safe
  })
}

function encodeKey(key) {
  return key.split('/').flatMap((seg) => chunkSegment(escapeSegment(seg)))
}

function decodeKey(parts) {
  const segs = []
  let pending = ''
  for (const part of parts) {
    if (part.endsWith('&+')) {
      pending += part.slice(0, -2)
      continue
    }
    segs.push(pending + part)
    pending = ''
  }
  return segs
    .map((seg) =>
      seg === '&-'
        ? ''
        : seg.replace(/&([0-9A-F]{2})/g, (_m, hex) => String.fromCharCode(parseInt(hex, 16)))
    )
    .join('/')
}

function utf8Compare(a, b) {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

class FaithfulStore extends FilesystemStore {
  getResourcePath(bucket, key = '', resource) {
    if (!key) {
      // bucket-level resources (cors, website, uploads) as stock s3rver
      return path.join(this.rootDirectory, bucket, `._S3rver_${resource}`)
    }
    const parts = encodeKey(key)
    const last = parts.pop()
    return path.join(this.rootDirectory, bucket, ...parts, `${last}._S3rver_${resource}`)
  }

  allKeys(bucket) {
    const bucketPath = this.getBucketPath(bucket)
    const keys = []
    const walk = (dir, rel) => {
      for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
        const relPath = [...rel, ent.name]
        if (ent.isDirectory()) {
          if (rel.length === 0 && ent.name.startsWith('._S3rver_')) continue
          walk(path.join(dir, ent.name), relPath)
        } else if (ent.name.endsWith(OBJECT_SUFFIX)) {
          relPath[relPath.length - 1] = ent.name.slice(0, -OBJECT_SUFFIX.length)
          keys.push(decodeKey(relPath))
        }
      }
    }
    walk(bucketPath, [])
    return keys.sort(utf8Compare)
  }

  // same contract as FilesystemStore#listObjects, over decoded keys in
  // S3's (UTF-8 byte) order
  async listObjects(bucket, options) {
    const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options
    const commonPrefixes = new Set()
    const keys = []
    let isTruncated = false
    for (const key of this.allKeys(bucket)) {
      if ((startAfter && utf8Compare(key, startAfter) <= 0) || !key.startsWith(prefix)) {
        continue
      }
      if (delimiter) {
        const idx = key.slice(prefix.length).indexOf(delimiter)
        if (idx !== -1) {
          commonPrefixes.add(key.slice(0, prefix.length + idx + delimiter.length))
          continue
        }
      }
      if (keys.length < maxKeys) {
        keys.push(key)
      } else {
        isTruncated = true
        break
      }
    }
    const metadata = await Promise.all(
      keys.map((key) =>
        this.getMetadata(bucket, key).catch((err) => {
          if (err.code === 'ENOENT') return undefined
          throw err
        })
      )
    )
    return {
      objects: keys
        .map((key, i) => [key, metadata[i]])
        .filter(([, md]) => md !== undefined)
        .map(([key, md]) => new S3Object(bucket, key, null, md)),
      commonPrefixes: [...commonPrefixes].sort(utf8Compare),
      isTruncated,
    }
  }

  async deleteObject(bucket, key) {
    await Promise.all(
      ['object', 'object.md5', 'metadata.json'].map((r) =>
        fs.promises.unlink(this.getResourcePath(bucket, key, r)).catch((err) => {
          if (err.code !== 'ENOENT') throw err
        })
      )
    )
    // remove directories left empty
    const bucketPath = this.getBucketPath(bucket)
    const parts = encodeKey(key)
    parts.pop()
    while (parts.length) {
      const dir = path.join(bucketPath, ...parts)
      try {
        if (fs.readdirSync(dir).length) break
        fs.rmdirSync(dir)
      } catch (err) {
        if (err.code !== 'ENOENT') throw err
      }
      parts.pop()
    }
  }
}

const server = new S3rver({
  port,
  address,
  directory,
  silent: true,
  allowMismatchedSignatures: false,
  resetOnClose: false,
  configureBuckets: buckets.map((name) => ({ name })),
})
server.store = server.context.store = new FaithfulStore(directory)

// s3rver XML-escapes listing values twice (he.escape, then the XML builder),
// so a key "a&b" would be listed as "a&amp;b".  Undo the outer layer: every
// "&" the inner escaping leaves starts one of these entities.
server.middleware.unshift(async (ctx, next) => {
  await next()
  if (typeof ctx.body === 'string' && ctx.body.startsWith('<?xml')) {
    ctx.body = ctx.body.replace(/&amp;(amp|lt|gt|quot|#x27|#x60);/g, '&$1;')
  }
})

// Checks s3rver misses, that AWS makes on SigV4 requests:
// - clock skew: s3rver only parses RFC 1123 dates, so for an x-amz-date
//   ("20240101T000000Z") its 15-minute check never fires;
// - the credential scope: region must be ours, service "s3", date the
//   x-amz-date's day (s3rver signs with whatever scope it is given).
server.middleware.unshift(async (ctx, next) => {
  const authorization = ctx.get('authorization')
  let credential
  let header = false
  if (/^AWS4-HMAC-SHA256 /i.test(authorization)) {
    header = true
    credential = (/Credential=([^,\s]+)/.exec(authorization) || [])[1]
    const amzDate = ctx.get('x-amz-date')
    if (amzDate) {
      const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate)
      if (!m) {
        throw new S3Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header')
      }
      const t = Date.UTC(m[1], m[2] - 1, m[3], m[4], m[5], m[6])
      if (Math.abs(Date.now() - t) > 15 * 60 * 1000) {
        throw new S3Error(
          'RequestTimeTooSkewed',
          'The difference between the request time and the current time is too large.',
          { RequestTime: amzDate, ServerTime: new Date().toISOString().replace(/\.\d+/, '') }
        )
      }
      if (credential && credential.split('/')[1] !== amzDate.slice(0, 8)) {
        throw new S3Error(
          'AuthorizationHeaderMalformed',
          'The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.'
        )
      }
    }
  } else if (ctx.query['X-Amz-Algorithm'] === 'AWS4-HMAC-SHA256') {
    credential = ctx.query['X-Amz-Credential']
  }
  if (typeof credential === 'string') {
    const [, , credRegion, service, term] = credential.split('/')
    if (credRegion !== region || service !== 's3' || term !== 'aws4_request') {
      throw new S3Error(
        header ? 'AuthorizationHeaderMalformed' : 'AuthorizationQueryParametersError',
        `The authorization header is malformed; the region '${credRegion}' is wrong; expecting '${region}'` +
          (service !== 's3' || term !== 'aws4_request' ? ` (scope must end in /${region}/s3/aws4_request)` : ''),
        { Region: region }
      )
    }
  }
  await next()
})

// ---------------------------------------------------------------------------
// Temporary credentials, as STS hands them out (see ../README): the suite's
// IMDS, container and STS endpoints get theirs here.
//
//   POST /_replay/credentials?ttl=SECONDS   mint a key pair with a session
//        token and an expiry: 200 {"AccessKeyId", "SecretAccessKey",
//        "SessionToken", "Expiration"} (ISO 8601, UTC)
//   POST /_replay/credentials/revoke?key=ID   revoke one (204)
//   GET  /_replay/credentials               what was minted, without secrets
//
// A request signed with a minted key must carry its session token
// (x-amz-security-token, or X-Amz-Security-Token when presigned) and come
// before the expiry, or S3's answers: 400 ExpiredToken, 400 InvalidToken.
// Minted secrets and tokens hold "mintSECRET" / "mintTOKEN", so that the
// tests can look for them in every log.
const minted = new Map() // key id -> { token, expires, revoked }

function randomChars(n, alphabet) {
  const bytes = crypto.randomBytes(n)
  let out = ''
  for (let i = 0; i < n; i++) out += alphabet[bytes[i] % alphabet.length]
  return out
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

function mint(ttl) {
  const id = 'ASIA' + randomChars(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')
  const secret = 'mintSECRET' + randomChars(30, B64)
  // real session tokens are 400 to 1,000+ bytes of base64
  const token = 'mintTOKEN' + randomChars(600, B64) + '=='
  const expires = new Date(Math.floor(Date.now() / 1000 + ttl) * 1000)
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(id, secret)
  minted.set(id, { token, expires, revoked: false })
  return {
    AccessKeyId: id,
    SecretAccessKey: secret,
    SessionToken: token,
    Expiration: expires.toISOString().replace(/\.\d+Z$/, 'Z'),
  }
}

function revoke(id) {
  const m = minted.get(id)
  if (!m) return false
  m.revoked = true
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey(id)
  return true
}

// forget keys long expired (an hour), so that a long run stays small
setInterval(() => {
  const old = Date.now() - 3600 * 1000
  for (const [id, m] of minted) {
    if (m.expires.getTime() < old) {
      revoke(id)
      minted.delete(id)
    }
  }
}, 60 * 1000).unref()

server.middleware.unshift(async (ctx, next) => {
  if (ctx.path === '/_replay/credentials' || ctx.path.startsWith('/_replay/credentials/')) {
    if (ctx.method === 'POST' && ctx.path === '/_replay/credentials') {
      const ttl = Number(ctx.query.ttl ?? 3600)
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 43200) {
        ctx.status = 400
        ctx.body = 'ttl: 1 to 43200 seconds\n'
        return
      }
      ctx.type = 'application/json'
      ctx.body = JSON.stringify(mint(ttl))
      return
    }
    if (ctx.method === 'POST' && ctx.path === '/_replay/credentials/revoke') {
      ctx.status = revoke(String(ctx.query.key)) ? 204 : 404
      return
    }
    if (ctx.method === 'GET' && ctx.path === '/_replay/credentials') {
      ctx.type = 'application/json'
      ctx.body = JSON.stringify(
        [...minted].map(([id, m]) => ({
          AccessKeyId: id,
          Expiration: m.expires.toISOString(),
          revoked: m.revoked,
        }))
      )
      return
    }
    ctx.status = 405
    return
  }

  const authorization = ctx.get('authorization')
  const credential = /^AWS4-HMAC-SHA256 /i.test(authorization)
    ? (/Credential=([^,\s]+)/.exec(authorization) || [])[1]
    : ctx.query['X-Amz-Credential']
  const m = typeof credential === 'string' && minted.get(credential.split('/')[0])
  if (m && !m.revoked) {
    const token = ctx.get('x-amz-security-token') || ctx.query['X-Amz-Security-Token']
    if (token !== m.token) {
      throw new S3Error('InvalidToken', 'The provided token is malformed or otherwise invalid.')
    }
    if (Date.now() >= m.expires.getTime()) {
      throw new S3Error('ExpiredToken', 'The provided token has expired.')
    }
  }
  await next()
})

// AWS answers every request with a request id and an extended one; s3rver
// does not, so a test that they are not relayed would test nothing.
server.middleware.unshift(async (ctx, next) => {
  ctx.set('x-amz-request-id', crypto.randomBytes(8).toString('hex').toUpperCase())
  ctx.set('x-amz-id-2', crypto.randomBytes(48).toString('base64'))
  await next()
})

// Private buckets: s3rver serves a request that carries no signature at all
// anonymously; AWS refuses it (403 AccessDenied) unless the bucket is public.
// Placed just before the router, where the vhost middleware has already
// put the bucket first in the path.  Signed requests go on to s3rver's own
// signature check.
function isSigned(ctx) {
  return (
    'authorization' in ctx.headers ||
    'X-Amz-Algorithm' in ctx.query ||
    'Signature' in ctx.query
  )
}

const routerAt = server.middleware.findIndex((m) => m.router)
if (routerAt < 0) die('no router in the middleware stack')
server.middleware.splice(routerAt, 0, async (ctx, next) => {
  if (!isSigned(ctx)) {
    let bucket = ctx.path.split('/')[1] || ''
    try {
      bucket = decodeURIComponent(bucket)
    } catch {
      // a bad escape: no bucket of ours
    }
    if (!publicBuckets.has(bucket)) {
      throw new S3Error('AccessDenied', 'Access Denied')
    }
  }
  await next()
})

// SigV4 in virtual-hosted style: AWS signs the path as sent ("/KEY", the
// bucket being in Host); s3rver signs "/BUCKET/KEY" whatever the style (the
// JS SDK v2's SigV2 habit), so a correct virtual-hosted request would fail
// here.  The canonical URI of such a request is rebuilt from its own path.
{
  const { AsyncLocalStorage } = require('node:async_hooks')
  const v4 = require('@20minutes/s3rver/lib/signature/v4')
  const { encodeURIComponentRFC3986 } = require('@20minutes/s3rver/lib/utils')
  const scope = new AsyncLocalStorage()
  const getStringToSign = v4.getStringToSign

  server.middleware.unshift((ctx, next) => scope.run({ ctx, path: ctx.path }, next))

  v4.getStringToSign = (canonicalRequest, request) => {
    const s = scope.getStore()
    if (s && s.ctx.state.vhost) {
      const uri = s.path
        .split('/')
        .map((seg) => encodeURIComponentRFC3986(decodeURIComponent(seg)))
        .join('/')
      canonicalRequest = { ...canonicalRequest, uri }
    }
    return getStringToSign(canonicalRequest, request)
  }
}

// Optional request log, one JSON line per request, so tests can assert what
// S3 did or did not see (method, raw URL as sent, Host, Range, status, auth
// mechanism and the access key it names).  Written synchronously before the
// response goes out: once a client has its answer, the line is there.
// The credentials' control API (/_replay/) is not logged.
if (logFile) {
  const out = fs.openSync(logFile, 'a')
  server.middleware.unshift(async (ctx, next) => {
    // the credentials' control API above is the suite's, not S3's
    if (ctx.path.startsWith('/_replay/')) return next()
    const auth = ctx.get('authorization')
      ? ctx.get('authorization').split(' ')[0]
      : 'X-Amz-Algorithm' in ctx.query
        ? 'presigned-v4'
        : 'Signature' in ctx.query
          ? 'presigned-v2'
          : 'anonymous'
    const credential =
      (/Credential=([^,\s/]+)/.exec(ctx.get('authorization')) || [])[1] ??
      (ctx.query['X-Amz-Credential'] ?? ctx.query.AWSAccessKeyId ?? '').split('/')[0]
    const entry = {
      time: new Date().toISOString(),
      method: ctx.method,
      url: ctx.url,
      host: ctx.get('host'),
      auth,
      key: credential || undefined,
      range: ctx.get('range') || undefined,
    }
    try {
      await next()
      entry.status = ctx.status
    } catch (err) {
      // s3rver throws S3Errors; koa turns them into the response later
      entry.status = err.status || 500
      entry.error = err.code || err.message
      throw err
    } finally {
      fs.writeSync(out, `${JSON.stringify(entry)}\n`)
    }
  })
}

// with silent: true s3rver still emits koa 'error' events; keep them quiet
// unless they are real server faults
server.on('error', (err) => {
  if (!err.status || err.status >= 500) {
    process.stderr.write(`s3 server error: ${err.stack || err}\n`)
  }
})

server.run().then(
  (addr) => {
    process.stdout.write(`ready ${addr.address}:${addr.port}\n`)
  },
  (err) => {
    die(`cannot start: ${err.message}`)
  }
)

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close().finally(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  })
}
