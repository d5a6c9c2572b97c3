#!/usr/bin/env node
// The suite's EC2 instance metadata service, the part that gives an
// instance profile's credentials, in IMDSv2 (and IMDSv1 when allowed) as
// AWS documents it (see ../README):
//
//   PUT /latest/api/token
//       X-aws-ec2-metadata-token-ttl-seconds: 1..21600   (else 400)
//       -> 200 text/plain, the session token, and the same TTL header;
//          403 with an X-Forwarded-For header
//   GET /latest/meta-data/iam/security-credentials/
//       X-aws-ec2-metadata-token: TOKEN   (401 if missing or not valid,
//       unless IMDSv1 is allowed and there is no token)
//       -> 200 text/plain, the role's name
//   GET /latest/meta-data/iam/security-credentials/ROLE
//       -> 200 text/plain, {"Code": "Success", "LastUpdated", "Type":
//          "AWS-HMAC", "AccessKeyId", "SecretAccessKey", "Token",
//          "Expiration"}
//
// State (common.js, plus): role ("replay-role"; "" for no role: 404),
// v1 (false: IMDSv2 only, HttpTokens "required"), v2 (true; false for an
// IMDS without the token API: the PUT is 404), token_ttl_max (21600).

'use strict'

const crypto = require('node:crypto')
const { Service, iso } = require('./common')

const svc = new Service('imds', { role: 'replay-role', v1: false, v2: true, token_ttl_max: 21600 })
const tokens = new Map() // token -> expiry (ms)

const notFound =
  '<?xml version="1.0" encoding="iso-8859-1"?>\n' +
  '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n' +
  '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n' +
  '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n' +
  ' <head>\n  <title>404 - Not Found</title>\n </head>\n' +
  ' <body>\n  <h1>404 - Not Found</h1>\n </body>\n</html>\n'

function plain(res, status, body, headers) {
  svc.send(res, status, 'text/plain', body, { Server: 'EC2ws', Connection: 'close', ...headers })
}

function error(res, status) {
  const titles = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 503: 'Service Unavailable' }
  if (status === 404) return svc.send(res, 404, 'text/html', notFound, { Server: 'EC2ws', Connection: 'close' })
  plain(res, status, `${status} - ${titles[status] || 'Error'}\n`)
}

svc.listen(async (req, res, body) => {
  const prefix = '/latest/meta-data/iam/security-credentials/'

  if (req.url === '/latest/api/token') {
    svc.record(req, '', { step: 'token' })
    if (req.method !== 'PUT') return error(res, 405)
    if (!svc.state.v2) return error(res, 404)
    if (req.headers['x-forwarded-for']) return error(res, 403)
    const ttl = req.headers['x-aws-ec2-metadata-token-ttl-seconds']
    if (!/^[0-9]+$/.test(ttl || '') || Number(ttl) < 1 || Number(ttl) > svc.state.token_ttl_max) {
      return error(res, 400)
    }
    // "mintIMDS" in it, so that the tests can look for it in every log
    const token = 'AQAEAmintIMDS' + crypto.randomBytes(36).toString('base64').replace(/=+$/, '') + '=='
    tokens.set(token, Date.now() + Number(ttl) * 1000)
    return plain(res, 200, token, { 'X-aws-ec2-metadata-token-ttl-seconds': ttl })
  }

  if (!req.url.startsWith(prefix)) {
    svc.record(req, '', { step: 'other' })
    return error(res, 404)
  }

  const role = req.url.slice(prefix.length)
  const step = role === '' ? 'role' : 'credentials'
  const token = req.headers['x-aws-ec2-metadata-token']
  svc.record(req, '', {
    step,
    token: token === undefined ? 'none' : tokens.get(token) > Date.now() ? 'valid' : 'invalid',
  })

  if (req.method !== 'GET') return error(res, 405)

  if (token === undefined ? !svc.state.v1 : !(tokens.get(token) > Date.now())) {
    return error(res, 401)
  }

  if (role === '') {
    return svc.state.role ? plain(res, 200, svc.state.role) : error(res, 404)
  }

  if (role !== svc.state.role) return error(res, 404)

  switch (svc.outcome()) {
    case 'hang':
      return svc.hang(req)
    case 'fail':
      return error(res, svc.state.fail_status)
  }

  const c = await svc.mint()
  const doc = {
    Code: 'Success',
    LastUpdated: iso(Date.now()),
    Type: 'AWS-HMAC',
    AccessKeyId: c.AccessKeyId,
    SecretAccessKey: c.SecretAccessKey,
    Token: c.SessionToken,
    Expiration: c.Expiration,
  }
  // IMDS's own layout: two-space indent, " : " between name and value
  const text =
    '{\n' +
    Object.entries(doc)
      .map(([k, v]) => `  "${k}" : ${JSON.stringify(v)}`)
      .join(',\n') +
    '\n}'
  plain(res, 200, text)
})
