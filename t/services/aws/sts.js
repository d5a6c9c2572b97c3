#!/usr/bin/env node
// The suite's STS, AssumeRoleWithWebIdentity only, over HTTPS (--cert,
// --key: the certificate of the suite's CA, t/services/up), as AWS documents the
// action, its Query API form and its errors (see ../README):
//
//   POST /   Content-Type: application/x-www-form-urlencoded
//       Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=...
//       &RoleSessionName=...&WebIdentityToken=...[&DurationSeconds=...]
//       -> 200 text/xml, <AssumeRoleWithWebIdentityResponse> with the
//          <Credentials> (SessionToken, SecretAccessKey, Expiration,
//          AccessKeyId)
//       -> 400 <ErrorResponse><Error><Type>Sender</Type><Code>...</Code>
//          <Message>...</Message></Error><RequestId/></ErrorResponse>:
//          MissingParameter, ValidationError, InvalidAction,
//          InvalidIdentityToken, ExpiredTokenException; 403 AccessDenied
//          for another role; 500 InternalFailure, 503 ServiceUnavailable
//
// State (common.js, plus): token (the web identity token it accepts; ""
// for any), expired_token (one it calls expired), role_arn (the role that
// may be assumed; "" for any).

'use strict'

const crypto = require('node:crypto')
const { Service } = require('./common')

const svc = new Service('sts', { token: '', expired_token: '', role_arn: '' })

const NS = 'https://sts.amazonaws.com/doc/2011-06-15/'

function xmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&${{ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot', "'": 'apos' }[c]};`)
}

function error(res, status, code, message) {
  const type = status < 500 ? 'Sender' : 'Receiver'
  const body =
    `<ErrorResponse xmlns="${NS}">\n` +
    '  <Error>\n' +
    `    <Type>${type}</Type>\n` +
    `    <Code>${code}</Code>\n` +
    `    <Message>${xmlEscape(message)}</Message>\n` +
    '  </Error>\n' +
    `  <RequestId>${crypto.randomUUID()}</RequestId>\n` +
    '</ErrorResponse>\n'
  svc.send(res, status, 'text/xml', body, { Connection: 'close' })
}

svc.listen(async (req, res, body) => {
  const form = Object.fromEntries(new URLSearchParams(body))
  svc.record(req, body, { form })

  if (req.method !== 'POST' || req.url !== '/') {
    return error(res, 400, 'InvalidAction', 'only POST / is served here')
  }
  if (!/^application\/x-www-form-urlencoded\b/.test(req.headers['content-type'] || '')) {
    return error(res, 400, 'InvalidParameterValue', 'the body is not application/x-www-form-urlencoded')
  }
  if (form.Action !== 'AssumeRoleWithWebIdentity') {
    return error(res, 400, 'InvalidAction', `Could not find operation ${form.Action} for version ${form.Version}`)
  }
  if (form.Version !== '2011-06-15') {
    return error(res, 400, 'InvalidAction', `Could not find operation ${form.Action} for version ${form.Version}`)
  }
  for (const p of ['RoleArn', 'RoleSessionName', 'WebIdentityToken']) {
    if (!form[p]) return error(res, 400, 'MissingParameter', `The request must contain the parameter ${p}`)
  }
  if (!/^[\w+=,.@-]{2,64}$/.test(form.RoleSessionName)) {
    return error(res, 400, 'ValidationError', "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint")
  }
  let duration
  if (form.DurationSeconds !== undefined) {
    duration = Number(form.DurationSeconds)
    if (!Number.isInteger(duration) || duration < 900 || duration > 43200) {
      return error(res, 400, 'ValidationError', "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint")
    }
  }
  if (svc.state.expired_token && form.WebIdentityToken === svc.state.expired_token) {
    return error(res, 400, 'ExpiredTokenException', 'Token expired: current date/time is after the exp claim')
  }
  if (svc.state.token && form.WebIdentityToken !== svc.state.token) {
    return error(res, 400, 'InvalidIdentityToken', 'The web identity token that was passed could not be validated by AWS')
  }
  if (svc.state.role_arn && form.RoleArn !== svc.state.role_arn) {
    return error(res, 403, 'AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity')
  }

  switch (svc.outcome()) {
    case 'hang':
      return svc.hang(req)
    case 'fail':
      return svc.state.fail_status === 503
        ? error(res, 503, 'ServiceUnavailable', 'Service is unable to handle request.')
        : error(res, svc.state.fail_status, 'InternalFailure', 'The request processing has failed because of an unknown error, exception or failure.')
  }

  // DurationSeconds, else the state's (short, for the tests)
  const c = await svc.mint(duration ?? svc.state.ttl)
  const session = form.RoleSessionName
  const xml =
    `<AssumeRoleWithWebIdentityResponse xmlns="${NS}">\n` +
    '  <AssumeRoleWithWebIdentityResult>\n' +
    '    <SubjectFromWebIdentityToken>system:serviceaccount:games:replay</SubjectFromWebIdentityToken>\n' +
    '    <Audience>sts.amazonaws.com</Audience>\n' +
    '    <AssumedRoleUser>\n' +
    `      <Arn>arn:aws:sts::123456789012:assumed-role/replay/${xmlEscape(session)}</Arn>\n` +
    `      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:${xmlEscape(session)}</AssumedRoleId>\n` +
    '    </AssumedRoleUser>\n' +
    '    <Credentials>\n' +
    `      <SessionToken>${xmlEscape(c.SessionToken)}</SessionToken>\n` +
    `      <SecretAccessKey>${xmlEscape(c.SecretAccessKey)}</SecretAccessKey>\n` +
    `      <Expiration>${c.Expiration}</Expiration>\n` +
    `      <AccessKeyId>${c.AccessKeyId}</AccessKeyId>\n` +
    '    </Credentials>\n' +
    '    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE</Provider>\n' +
    '  </AssumeRoleWithWebIdentityResult>\n' +
    '  <ResponseMetadata>\n' +
    `    <RequestId>${crypto.randomUUID()}</RequestId>\n` +
    '  </ResponseMetadata>\n' +
    '</AssumeRoleWithWebIdentityResponse>\n'
  svc.send(res, 200, 'text/xml', xml, { Connection: 'close' })
})
