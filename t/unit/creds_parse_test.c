
/*
 * Unit tests of the credential services' answer readers: the examples of
 * AWS's documentation (the IMDS instance profile credentials, the ECS
 * task credentials, STS's AssumeRoleWithWebIdentity response and error
 * response), then what they must refuse.
 *
 * Prints "ok N - name" or "not ok N - name" per check and, last,
 * "creds_parse: N passed, M failed"; exits 1 on any failure.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_replay_creds_parse.h"

#include "tap.h"


static ngx_replay_creds_parsed_t  out;


static int
eq(const unsigned char *got, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(got, want, len) == 0;
}


static int
json(const char *s)
{
    return ngx_replay_creds_parse_json((const unsigned char *) s, strlen(s),
                                       &out);
}


static int
sts(const char *s)
{
    return ngx_replay_creds_parse_sts((const unsigned char *) s, strlen(s),
                                      &out);
}


static time_t
tm(const char *s)
{
    time_t  t;

    if (ngx_replay_creds_parse_time((const unsigned char *) s, strlen(s), &t)
        != NGX_REPLAY_CREDS_OK)
    {
        return -1;
    }

    return t;
}


/* docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html */

static const char  imds[] =
    "{\n"
    "  \"Code\" : \"Success\",\n"
    "  \"LastUpdated\" : \"2012-04-26T16:39:16Z\",\n"
    "  \"Type\" : \"AWS-HMAC\",\n"
    "  \"AccessKeyId\" : \"ASIAIOSFODNN7EXAMPLE\",\n"
    "  \"SecretAccessKey\" : \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\",\n"
    "  \"Token\" : \"token\",\n"
    "  \"Expiration\" : \"2017-05-17T15:09:54Z\"\n"
    "}";

/* docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html */

static const char  ecs[] =
    "{\"AccessKeyId\":\"ACCESS_KEY_ID\",\"Expiration\":\"EXPIRATION_DATE\","
    "\"RoleArn\":\"TASK_ROLE_ARN\",\"SecretAccessKey\":\"SECRET_ACCESS_KEY\","
    "\"Token\":\"SECURITY_TOKEN_STRING\"}";

/* docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html */

static const char  sts_ok[] =
    "<AssumeRoleWithWebIdentityResponse "
    "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>amzn1.account.AF6RHO7KZU5XRVQJGXK6HB56KR2A"
    "</SubjectFromWebIdentityToken>\n"
    "    <Audience>client.5498841531868486423.1548@apps.example.com</Audience>\n"
    "    <AssumedRoleUser>\n"
    "      <Arn>arn:aws:sts::123456789012:assumed-role/FederatedWebIdentityRole/app1</Arn>\n"
    "      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:app1</AssumedRoleId>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>\n"
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
    "      <Expiration>2014-10-24T23:00:23Z</Expiration>\n"
    "      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <SourceIdentity>SourceIdentityValue</SourceIdentity>\n"
    "    <Provider>www.amazon.com</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata>\n"
    "    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>\n"
    "  </ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

/* docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html, the form */

static const char  sts_error[] =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <Error>\n"
    "    <Type>Sender</Type>\n"
    "    <Code>InvalidIdentityToken</Code>\n"
    "    <Message>Couldn't retrieve verification key from your identity "
    "provider</Message>\n"
    "  </Error>\n"
    "  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
    "</ErrorResponse>\n";


int
main(void)
{
    int   rc;
    char  big[12000], doc[13000];

    /* IMDS */

    rc = json(imds);
    check(rc == NGX_REPLAY_CREDS_OK, "imds: the documented answer");
    check(eq(out.key_id, out.key_id_len, "ASIAIOSFODNN7EXAMPLE"),
          "imds: AccessKeyId");
    check(eq(out.secret, out.secret_len,
             "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
          "imds: SecretAccessKey");
    check(eq(out.token, out.token_len, "token"), "imds: Token");
    check(out.expiration == 1495033794, "imds: Expiration");

    rc = json("{\"Code\":\"AssumeRoleUnauthorizedAccess\","
              "\"Message\":\"EC2 cannot assume the role\","
              "\"LastUpdated\":\"2024-01-01T00:00:00Z\"}");
    check(rc == NGX_REPLAY_CREDS_SERVICE_ERROR
          && strcmp(out.code, "AssumeRoleUnauthorizedAccess") == 0,
          "imds: a Code other than Success is the service's error");

    rc = json("{\"Code\":\"Success\",\"AccessKeyId\":\"AKID\","
              "\"SecretAccessKey\":\"s\",\"Token\":\"t\","
              "\"Expiration\":\"2017-05-17T15:09:54Z\"}");
    check(rc == NGX_REPLAY_CREDS_OK && out.code[0] == '\0',
          "imds: Code Success, no code left");

    /* ECS: the documented answer has placeholders for the date */

    rc = json(ecs);
    check(rc == NGX_REPLAY_CREDS_INVALID
          && strcmp(out.field, "AccessKeyId") != 0
          && out.key_id_len == 0,
          "ecs: a placeholder expiration is refused, nothing kept");

    rc = json("{\"AccessKeyId\":\"ASIAEXAMPLE\","
              "\"Expiration\":\"2024-02-29T23:59:59Z\","
              "\"RoleArn\":\"arn:aws:iam::123456789012:role/r\","
              "\"SecretAccessKey\":\"a\\/b\\u0041\","
              "\"Token\":\"IQoJb3JpZ2luX2VjE+/=\"}");
    check(rc == NGX_REPLAY_CREDS_OK, "ecs: an answer with escapes");
    check(eq(out.secret, out.secret_len, "a/bA"), "ecs: escapes decoded");
    check(eq(out.token, out.token_len, "IQoJb3JpZ2luX2VjE+/="), "ecs: Token");
    check(out.expiration == 1709251199, "ecs: a leap day");

    rc = json("{\"code\":\"InvalidToken\",\"message\":\"the token is not "
              "valid\"}");
    check(rc == NGX_REPLAY_CREDS_SERVICE_ERROR
          && strcmp(out.code, "InvalidToken") == 0,
          "ecs: the agent's error object");

    /* EKS Pod Identity: AccountId, nested values are skipped */

    rc = json(" {\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"x\","
              "\"Token\":\"y\",\"AccountId\":\"123456789012\","
              "\"Expiration\":\"2024-01-01T00:00:00+01:00\","
              "\"Extra\":{\"a\":[1,2.5e3,{\"b\":null}],\"c\":true},"
              "\"Empty\":[],\"Obj\":{}} \n");
    check(rc == NGX_REPLAY_CREDS_OK && out.expiration == 1704063600,
          "eks: other members skipped, an offset applied");

    /* refused */

    check(json("") == NGX_REPLAY_CREDS_SYNTAX, "json: empty");
    check(json("[]") == NGX_REPLAY_CREDS_SYNTAX, "json: not an object");
    check(json("{\"AccessKeyId\":\"A\"") == NGX_REPLAY_CREDS_SYNTAX,
          "json: cut");
    check(json("{\"AccessKeyId\":\"A\",}") == NGX_REPLAY_CREDS_SYNTAX,
          "json: a trailing comma");
    check(json("{} x") == NGX_REPLAY_CREDS_SYNTAX, "json: trailing bytes");
    check(json("{\"a\":\"\x01\"}") == NGX_REPLAY_CREDS_SYNTAX,
          "json: a raw control byte in a string");
    check(json("{\"a\":\"\\ud800\"}") == NGX_REPLAY_CREDS_SYNTAX,
          "json: a lone surrogate");
    check(json("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]"
               "]]]]]]]]]]]]]]]]}") == NGX_REPLAY_CREDS_SYNTAX,
          "json: too deep");

    rc = json("{}");
    check(rc == NGX_REPLAY_CREDS_MISSING && strcmp(out.field, "AccessKeyId")
                                            == 0,
          "json: {} has no AccessKeyId");

    rc = json("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\"}");
    check(rc == NGX_REPLAY_CREDS_MISSING && strcmp(out.field, "Expiration")
                                            == 0,
          "json: no Expiration");

    rc = json("{\"AccessKeyId\":\"A\",\"AccessKeyId\":\"B\"}");
    check(rc == NGX_REPLAY_CREDS_INVALID, "json: a duplicate member");

    rc = json("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\","
              "\"Token\":\"a\\r\\nX-Injected: 1\","
              "\"Expiration\":\"2017-05-17T15:09:54Z\"}");
    check(rc == NGX_REPLAY_CREDS_INVALID && strcmp(out.field, "Token") == 0
          && out.token_len == 0,
          "json: CR LF in a token (a header injection) is refused");

    rc = json("{\"AccessKeyId\":\"AK-ID\",\"SecretAccessKey\":\"s\","
              "\"Expiration\":\"2017-05-17T15:09:54Z\"}");
    check(rc == NGX_REPLAY_CREDS_INVALID
          && strcmp(out.field, "AccessKeyId") == 0,
          "json: an access key id with a dash");

    memset(big, 'A', sizeof(big));
    snprintf(doc, sizeof(doc), "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":"
             "\"s\",\"Token\":\"%.*s\",\"Expiration\":\"2017-05-17T15:09:54Z\"}",
             NGX_REPLAY_CREDS_MAX_TOKEN + 1, big);
    rc = json(doc);
    check(rc == NGX_REPLAY_CREDS_INVALID && strcmp(out.field, "Token") == 0,
          "json: a token over the limit");

    snprintf(doc, sizeof(doc), "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":"
             "\"s\",\"Token\":\"%.*s\",\"Expiration\":\"2017-05-17T15:09:54Z\"}",
             NGX_REPLAY_CREDS_MAX_TOKEN, big);
    check(json(doc) == NGX_REPLAY_CREDS_OK
          && out.token_len == NGX_REPLAY_CREDS_MAX_TOKEN,
          "json: a token at the limit");

    /* STS */

    rc = sts(sts_ok);
    check(rc == NGX_REPLAY_CREDS_OK, "sts: the documented answer");
    check(eq(out.key_id, out.key_id_len, "ASgeIAIOSFODNN7EXAMPLE"),
          "sts: AccessKeyId");
    check(eq(out.secret, out.secret_len,
             "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"),
          "sts: SecretAccessKey");
    check(eq(out.token, out.token_len,
             "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE"),
          "sts: SessionToken");
    check(out.expiration == 1414191623, "sts: Expiration");

    rc = sts(sts_error);
    check(rc == NGX_REPLAY_CREDS_SERVICE_ERROR
          && strcmp(out.code, "InvalidIdentityToken") == 0,
          "sts: the error response's code");

    rc = sts("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentity"
             "Result><Credentials><AccessKeyId>ASIA1</AccessKeyId>"
             "<SecretAccessKey>a&amp;b&#x2F;&#47;</SecretAccessKey>"
             "<SessionToken>t</SessionToken><Expiration>2024-01-01T00:00:00"
             ".123Z</Expiration></Credentials></AssumeRoleWithWebIdentity"
             "Result></AssumeRoleWithWebIdentityResponse>");
    check(rc == NGX_REPLAY_CREDS_OK
          && eq(out.secret, out.secret_len, "a&b//")
          && out.expiration == 1704067200,
          "sts: entities, fractional seconds");

    rc = sts("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentity"
             "Result><Credentials><AccessKeyIdX>ASIA1</AccessKeyIdX>"
             "</Credentials></AssumeRoleWithWebIdentityResult>"
             "</AssumeRoleWithWebIdentityResponse>");
    check(rc == NGX_REPLAY_CREDS_MISSING
          && strcmp(out.field, "AccessKeyId") == 0,
          "sts: <AccessKeyIdX> is not <AccessKeyId>");

    check(sts("<html>Bad gateway</html>") == NGX_REPLAY_CREDS_MISSING,
          "sts: not STS's answer");
    check(sts("<AssumeRoleWithWebIdentityResult><Credentials>"
              "<AccessKeyId>A") == NGX_REPLAY_CREDS_SYNTAX,
          "sts: cut");
    check(sts("<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>"
              "A&bogus;</AccessKeyId></Credentials>"
              "</AssumeRoleWithWebIdentityResult>")
          == NGX_REPLAY_CREDS_SYNTAX,
          "sts: an unknown entity");

    /* times */

    check(tm("1970-01-01T00:00:00Z") == 0, "time: the epoch");
    check(tm("2000-03-01T00:00:00Z") == 951868800, "time: after 2000-02-29");
    check(tm("2024-01-01T01:00:00+01:00") == 1704067200, "time: +01:00");
    check(tm("2023-12-31T23:00:00-01:00") == 1704067200, "time: -01:00");
    check(tm("2024-01-01T00:00:00.999999Z") == 1704067200,
          "time: a fraction is dropped");
    check(tm("2023-02-29T00:00:00Z") == -1, "time: no 29th in 2023");
    check(tm("2024-01-01T00:00:00") == -1, "time: no zone");
    check(tm("2024-01-01 00:00:00Z") == -1, "time: a blank for T");
    check(tm("2024-1-01T00:00:00Z") == -1, "time: a short month");
    check(tm("2024-01-01T24:00:00Z") == -1, "time: hour 24");
    check(tm("2024-01-01T00:00:00.Z") == -1, "time: a bare dot");
    check(tm("1969-12-31T23:59:59Z") == -1, "time: before 1970");

    printf("creds_parse: %d passed, %d failed\n", tests - failures, failures);

    return failures ? 1 : 0;
}
