#!/usr/bin/env node
// The suite's container credentials endpoint: what the ECS agent serves at
// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and the EKS Pod Identity agent at
// AWS_CONTAINER_CREDENTIALS_FULL_URI, as AWS documents them (see ../README):
//
//   GET <path>   with "Authorization: <token>" when the agent wants one
//       -> 200 application/json
//          ECS: {"AccessKeyId", "Expiration", "RoleArn", "SecretAccessKey",
//                "Token"}
//          EKS: {"AccessKeyId", "SecretAccessKey", "Token", "AccountId",
//                "Expiration"}
//   errors as the agents answer them: a status and
//          {"code": "...", "message": "..."}
//
// State (common.js, plus): path (the credentials' path; other paths are
// 404), token (the authorization token wanted; "" for none: ECS), flavor
// ("ecs" or "eks").

'use strict'

const { Service } = require('./common')

const svc = new Service('container', { path: '/v2/credentials/replay', token: '', flavor: 'ecs' })

function error(res, status, code, message) {
  svc.send(res, status, 'application/json', JSON.stringify({ code, message }), { Connection: 'close' })
}

svc.listen(async (req, res) => {
  const auth = req.headers.authorization
  svc.record(req, '', { authorization: auth })

  if (req.method !== 'GET') return error(res, 405, 'InvalidRequest', 'method not allowed')
  if (req.url !== svc.state.path) return error(res, 404, 'NotFound', 'no credentials at this path')

  if (svc.state.token) {
    if (auth === undefined) {
      return error(res, 401, 'Unauthorized', 'the Authorization header is missing')
    }
    if (auth !== svc.state.token) {
      return error(res, 403, 'AccessDenied', 'the authorization token is not valid')
    }
  }

  switch (svc.outcome()) {
    case 'hang':
      return svc.hang(req)
    case 'fail':
      return error(res, svc.state.fail_status, 'InternalError', 'the credentials could not be fetched')
  }

  const c = await svc.mint()
  const doc =
    svc.state.flavor === 'eks'
      ? {
          AccessKeyId: c.AccessKeyId,
          SecretAccessKey: c.SecretAccessKey,
          Token: c.SessionToken,
          AccountId: '123456789012',
          Expiration: c.Expiration,
        }
      : {
          AccessKeyId: c.AccessKeyId,
          Expiration: c.Expiration,
          RoleArn: 'arn:aws:iam::123456789012:role/replay-task-role',
          SecretAccessKey: c.SecretAccessKey,
          Token: c.SessionToken,
        }
  svc.send(res, 200, 'application/json', JSON.stringify(doc), { Connection: 'close' })
})
