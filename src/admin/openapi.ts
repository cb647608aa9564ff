import { LOGIN_METHODS } from '../config/tenants.js';
import { LOCALES } from '../i18n/index.js';
import { EMAIL_ADDRESS_MAX_LENGTH, EMAIL_ADDRESS_PATTERN } from '../mail/email-address.js';
import { MANAGEMENT_SCOPE } from '../oidc/access-tokens.js';
import { API_PREFIX } from './problem.js';
import { ACCOUNT_ROLES } from '../persistence/account.repository.js';
import { ACTOR_KINDS, AUDIT_ACTIONS, AUDIT_OUTCOMES } from '../audit/audit.service.js';
import { DEFAULT_EVENTS, OPT_IN_EVENTS, TEST_EVENT, WEBHOOK_EVENTS } from '../webhooks/webhook-events.js';
import { MAX_ROTATION_GRACE_SECONDS, ROTATION_GRACE_SECONDS } from '../webhooks/webhook.service.js';
import { EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, DEFAULT_TOLERANCE_SECONDS } from '../webhooks/webhook-signature.js';

const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const problemRef = (name: string) => ({ $ref: `#/components/responses/${name}` });
const json = (schema: object) => ({ 'application/json': { schema } });

// The account view (AccountView in src/account/account.service.ts); shared by Account and CreatedAccount.
const accountProperties = {
  tenant: { type: 'string', description: 'The tenant the account belongs to (the token\'s tenant).' },
  userId: { type: 'string', description: 'The user ID (ユーザID), unique within the tenant.' },
  status: { type: 'string', enum: ['pending_activation', 'active', 'locked'], description: '`locked` whenever the account is locked, whatever its activation state. A temporary lock that has lifted by itself is no lock.' },
  loginMethod: { type: 'string', enum: [...LOGIN_METHODS] },
  role: { type: ['string', 'null'], enum: [...ACCOUNT_ROLES, null], description: "Staff of the tenant's support desk: `support` or `admin` may sign in to the support console (/console/); null for every other account." },
  failedAttempts: { type: 'integer', minimum: 0 },
  lockedAt: { ...nullableDateTime, description: 'When the lock in force was taken; null when the account is not locked.' },
  lockedUntil: { ...nullableDateTime, description: 'When a temporary lock (the contract\'s `lockout.duration_minutes`) lifts by itself; null when not locked, or locked until an administrator unlocks.' },
  activatedAt: nullableDateTime,
  lastLoginAt: nullableDateTime,
  createdAt: dateTime,
  devices: { type: 'array', items: ref('Device') },
};
const accountRequired = Object.keys(accountProperties);

const paging = [
  { name: 'page', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 1 } },
  { name: 'per_page', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
];
const acceptLanguage = {
  name: 'Accept-Language',
  in: 'header',
  required: false,
  description: 'Language of problem details: `ja` (default) or `en`.',
  schema: { type: 'string' },
};
const userIdParam = { name: 'userId', in: 'path', required: true, schema: { type: 'string', maxLength: 64 } };

const webhookIdParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
const deliveryIdParam = { name: 'deliveryId', in: 'path', required: true, schema: { type: 'string' } };
// The hook as listed (WebhookView in src/webhooks/webhook.service.ts); CreatedWebhook adds the secret.
const webhookProperties = {
  id: { type: 'string', format: 'uuid' },
  url: { type: 'string', format: 'uri' },
  events: { type: 'array', items: { type: 'string', enum: [...WEBHOOK_EVENTS] } },
  description: nullableString,
  enabled: { type: 'boolean', description: 'False: no events are queued for the hook (tests and redeliveries still go out). Turned off after WEBHOOK_DISABLE_AFTER_FAILURES deliveries given up in a row (5 by default); PATCH `{"enabled": true}` turns it on.' },
  disabledAt: { ...nullableDateTime, description: 'When the hook was turned off; null while enabled.' },
  consecutiveFailures: { type: 'integer', minimum: 0, description: 'Deliveries given up since the last delivered one.' },
  previousSecretExpiresAt: { ...nullableDateTime, description: 'Until when the secret replaced by the last rotation still signs (a second v1); null when it no longer does.' },
  createdAt: dateTime,
};
const webhookRequired = Object.keys(webhookProperties);
const cursorParam = { name: 'cursor', in: 'query', required: false, description: 'From `nextCursor` (or `links.next`) of the previous page.', schema: { type: 'string', maxLength: 200 } };
const auditFilters = [
  { name: 'user_id', in: 'query', required: false, description: 'Only records about this user ID.', schema: { type: 'string', maxLength: 64 } },
  { name: 'action', in: 'query', required: false, schema: { type: 'string', enum: [...AUDIT_ACTIONS] } },
  { name: 'actor_kind', in: 'query', required: false, schema: { type: 'string', enum: [...ACTOR_KINDS] } },
  { name: 'actor_id', in: 'query', required: false, description: 'A client_id (api), `user@host` (cli).', schema: { type: 'string', maxLength: 200 } },
  { name: 'outcome', in: 'query', required: false, description: '`done` (changes made) or `refused` (attempts turned down).', schema: { type: 'string', enum: [...AUDIT_OUTCOMES] } },
  { name: 'since', in: 'query', required: false, description: 'Records at or after this time.', schema: { type: 'string', format: 'date-time' } },
  { name: 'until', in: 'query', required: false, description: 'Records before this time.', schema: { type: 'string', format: 'date-time' } },
];
const auditStateSchema = {
  type: ['object', 'null'],
  description: "The account's state (null before a creation and after a deletion). Never secrets, hashes or codes.",
  required: ['status', 'locked', 'lockedUntil', 'failedAttempts', 'loginMethod', 'devices'],
  properties: {
    status: { type: 'string', enum: ['pending_activation', 'active'] },
    locked: { type: 'boolean' },
    lockedUntil: nullableDateTime,
    failedAttempts: { type: 'integer', minimum: 0 },
    loginMethod: { type: 'string' },
    devices: { type: 'array', items: ref('Device') },
  },
};

const problems = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [String(s), problemRef(`Problem${s}`)]));

/**
 * The OpenAPI 3.1 description of the management API, served at /api/v1/openapi.json. A test checks
 * every response of the API against it, so it has to stay exact.
 */
export function openApiDocument(issuer: string) {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Anshin Login management API',
      version: '1.0.0',
      description:
        "Account provisioning for a tenant's back office. Authenticate with an access token from the token endpoint " +
        `(client_credentials grant, scope \`${MANAGEMENT_SCOPE}\`); the token's client decides the tenant, and other tenants' accounts ` +
        'are never found. Errors are RFC 9457 problem details in the Accept-Language of the caller (Japanese by default).',
    },
    servers: [{ url: `${issuer}${API_PREFIX}` }],
    security: [{ backOffice: [MANAGEMENT_SCOPE] }],
    paths: {
      '/openapi.json': {
        get: {
          operationId: 'getOpenApiDocument',
          summary: 'This document',
          security: [],
          responses: { '200': { description: 'The OpenAPI document.', content: json({ type: 'object' }) } },
        },
      },
      '/accounts': {
        post: {
          operationId: 'createAccount',
          summary: 'Create an account waiting for activation',
          description:
            'Returns the activation URL and activation one-time password to hand to the user, or mails them to the devices when `sendActivation` is true ' +
            '(then the code is not returned). An existing user ID is a 409, never a duplicate.',
          parameters: [acceptLanguage],
          requestBody: { required: true, content: json(ref('CreateAccountRequest')) },
          responses: {
            '201': {
              description: 'Created.',
              headers: { Location: { description: 'The new account.', schema: { type: 'string', format: 'uri-reference' } } },
              content: json(ref('CreatedAccount')),
            },
            ...problems(400, 401, 403, 409, 413, 415, 503),
          },
        },
        get: {
          operationId: 'listAccounts',
          summary: "List the tenant's accounts, newest first",
          parameters: [{ name: 'status', in: 'query', required: false, schema: { type: 'string', enum: ['pending_activation', 'active', 'locked'] } }, ...paging, acceptLanguage],
          responses: { '200': { description: 'One page of accounts.', content: json(ref('AccountPage')) }, ...problems(400, 401, 403) },
        },
      },
      '/accounts/{userId}': {
        parameters: [userIdParam, acceptLanguage],
        get: {
          operationId: 'getAccount',
          summary: 'Get an account',
          responses: { '200': { description: 'The account.', content: json(ref('Account')) }, ...problems(401, 403, 404) },
        },
        patch: {
          operationId: 'updateAccount',
          summary: 'Change the login method or the staff role, and/or replace the devices',
          description:
            "A login-method change ends the account's sessions at the provider and revokes its tokens (sites registered for back-channel logout are told). " +
            'When an active account has no credentials for the new method (no password for `password`, `password_otp`, `password_certificate`; ' +
            'no valid certificate for `password_certificate`; no passkey for `passkey`, `otp_passkey`), it goes back to waiting for activation, where the user sets them: the answer then ' +
            'carries a fresh `activation` as `POST /accounts/{userId}/activation` returns it (mailed instead with `sendActivation`).',
          requestBody: { required: true, content: json(ref('UpdateAccountRequest')) },
          responses: {
            '200': { description: 'The updated account; with `activation` when the new method needs credentials set at a fresh activation.', content: json(ref('UpdatedAccount')) },
            ...problems(400, 401, 403, 404, 413, 415, 503),
          },
        },
        delete: {
          operationId: 'deleteAccount',
          summary: 'Delete an account with all its data',
          description:
            'Devices, login events, account events, codes, and the sessions, grants and tokens naming the account are removed; sites registered for back-channel logout are told.',
          responses: { '204': { description: 'Deleted.' }, ...problems(401, 403, 404) },
        },
      },
      '/accounts/{userId}/activation': {
        parameters: [userIdParam, acceptLanguage],
        post: {
          operationId: 'issueActivation',
          summary: 'Issue a fresh activation code (the previous one stops working)',
          description:
            "The account waits for activation again: its sessions end and its tokens are revoked (sites registered for back-channel logout are told). With `send`, the URL and code are mailed to its devices and the code is not returned.",
          requestBody: { required: false, content: json(ref('ActivationRequest')) },
          responses: { '200': { description: 'The new activation.', content: json(ref('Activation')) }, ...problems(400, 401, 403, 404, 413, 415, 503) },
        },
      },
      '/accounts/{userId}/unlock': {
        parameters: [userIdParam, acceptLanguage],
        post: {
          operationId: 'unlockAccount',
          summary: 'Unlock an account and clear its failure counter',
          description: 'A locked account is told by mail that it was unlocked.',
          requestBody: { required: false, content: json(ref('UnlockRequest')) },
          responses: { '200': { description: 'The account.', content: json(ref('Account')) }, ...problems(400, 401, 403, 404, 413, 415, 503) },
        },
      },
      '/accounts/{userId}/login-events': {
        parameters: [userIdParam, acceptLanguage],
        get: {
          operationId: 'listLoginEvents',
          summary: "The account's login attempts, newest first",
          parameters: paging,
          responses: { '200': { description: 'One page of login events.', content: json(ref('LoginEventPage')) }, ...problems(400, 401, 403, 404) },
        },
      },
      '/audit': {
        get: {
          operationId: 'listAuditRecords',
          summary: "The tenant's audit trail, newest first",
          description:
            'Every change staff made to the tenant\'s accounts (this API, the operators\' CLI): who (`actor`), what (`action`, `userId`), when, from where ' +
            '(`sourceIp`, `requestId`) and the account\'s state before and after. Pages follow `nextCursor`.',
          parameters: [...auditFilters, cursorParam, { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 100, default: 50 } }, acceptLanguage],
          responses: { '200': { description: 'One page of audit records.', content: json(ref('AuditPage')) }, ...problems(400, 401, 403) },
        },
      },
      '/audit/export': {
        get: {
          operationId: 'exportAuditRecords',
          summary: 'Every matching audit record as JSON Lines (streamed)',
          description: 'The same filters as `GET /audit`; one `AuditRecord` JSON object per line, newest first. Ask with `Accept: application/x-ndjson` or `?format=jsonl`.',
          parameters: [...auditFilters, { name: 'format', in: 'query', required: false, schema: { type: 'string', enum: ['jsonl'] } }, acceptLanguage],
          responses: {
            '200': {
              description: 'JSON Lines: one AuditRecord per line.',
              headers: { 'Content-Disposition': { description: 'attachment; filename="audit-<tenant>-<date>.jsonl"', schema: { type: 'string' } } },
              content: { 'application/x-ndjson': { schema: { type: 'string', description: 'Lines, each an AuditRecord (#/components/schemas/AuditRecord).' } } },
            },
            ...problems(400, 401, 403),
          },
        },
      },
      '/webhooks': {
        post: {
          operationId: 'createWebhook',
          summary: 'Register a webhook',
          description:
            `Events are POSTed to \`url\` as JSON \`{ id, type, createdAt, tenant, data }\`, signed in \`${SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">\` ` +
            `with the hook's \`secret\` (returned here only, never again), with \`${EVENT_ID_HEADER}\` (the same on every retry: deduplicate on it) and \`${EVENT_TYPE_HEADER}\`. ` +
            `A receiver recomputes the HMAC over the raw body, compares in constant time and refuses a \`t\` more than ${DEFAULT_TOLERANCE_SECONDS} s away from its clock. ` +
            'Any answer but 2xx (or none within the timeout) is retried with exponential backoff; see the delivery log. ' +
            `Without \`events\` the hook gets ${DEFAULT_EVENTS.join(', ')}; ${OPT_IN_EVENTS.join(' and ')} only when listed. ` +
            'The URL must be https in production; loopback and private addresses are refused unless the deployment allows them.',
          parameters: [acceptLanguage],
          requestBody: { required: true, content: json(ref('CreateWebhookRequest')) },
          responses: {
            '201': {
              description: 'Registered; the answer carries the signing secret, shown this once.',
              headers: { Location: { description: 'The new hook.', schema: { type: 'string', format: 'uri-reference' } } },
              content: json(ref('CreatedWebhook')),
            },
            ...problems(400, 401, 403, 413, 415),
          },
        },
        get: {
          operationId: 'listWebhooks',
          summary: "The tenant's webhooks",
          parameters: [acceptLanguage],
          responses: { '200': { description: 'The hooks (never their secrets).', content: json(ref('WebhookList')) }, ...problems(401, 403) },
        },
      },
      '/webhooks/{id}': {
        parameters: [webhookIdParam, acceptLanguage],
        get: {
          operationId: 'getWebhook',
          summary: 'A webhook (never its secret)',
          responses: { '200': { description: 'The hook.', content: json(ref('Webhook')) }, ...problems(401, 403, 404) },
        },
        patch: {
          operationId: 'updateWebhook',
          summary: 'Change a webhook, or turn it on or off',
          description: 'The URL is checked as at registration. `{"enabled": true}` turns on a hook turned off by its failures, and sets its failure count back to 0; events raised while it was off were not queued for it.',
          requestBody: { required: true, content: json(ref('UpdateWebhookRequest')) },
          responses: { '200': { description: 'The changed hook.', content: json(ref('Webhook')) }, ...problems(400, 401, 403, 404, 413, 415) },
        },
        delete: {
          operationId: 'deleteWebhook',
          summary: 'Delete a webhook with its delivery log',
          description: 'Deliveries still pending are dropped.',
          responses: { '204': { description: 'Deleted.' }, ...problems(401, 403, 404) },
        },
      },
      '/webhooks/{id}/rotate-secret': {
        parameters: [webhookIdParam, acceptLanguage],
        post: {
          operationId: 'rotateWebhookSecret',
          summary: 'Replace the signing secret',
          description:
            `The new secret is in this answer only. The secret it replaces keeps signing for \`graceSeconds\` (default ${ROTATION_GRACE_SECONDS} s, 24 h): ` +
            `meanwhile \`${SIGNATURE_HEADER}\` carries two signatures, \`t=<t>,v1=<with the new secret>,v1=<with the old one>\`, and a receiver accepts a request when any v1 matches the secret it holds, ` +
            'so it can switch to the new secret without missing an event. A secret older than the replaced one stops at once. `graceSeconds: 0` stops the old secret at once (after a leak).',
          requestBody: { required: false, content: json(ref('RotateSecretRequest')) },
          responses: { '200': { description: 'The hook with its new secret, shown this once.', content: json(ref('CreatedWebhook')) }, ...problems(400, 401, 403, 404, 413, 415) },
        },
      },
      '/webhooks/{id}/test': {
        parameters: [webhookIdParam, acceptLanguage],
        post: {
          operationId: 'testWebhook',
          summary: `Queue a \`${TEST_EVENT}\` event for this hook`,
          description: 'Delivered like any event (signed, retried); its attempts appear in the delivery log.',
          responses: { '202': { description: 'Queued.', content: json(ref('QueuedDelivery')) }, ...problems(401, 403, 404) },
        },
      },
      '/webhooks/{id}/deliveries': {
        parameters: [webhookIdParam, acceptLanguage],
        get: {
          operationId: 'listWebhookDeliveries',
          summary: "The hook's delivery log, newest first",
          description: 'Each delivery with every attempt: the status code the receiver answered, or the error (timeout, refused connection).',
          parameters: [cursorParam, { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } }],
          responses: { '200': { description: 'One page of deliveries.', content: json(ref('DeliveryPage')) }, ...problems(400, 401, 403, 404) },
        },
      },
      '/webhooks/{id}/deliveries/{deliveryId}/redeliver': {
        parameters: [webhookIdParam, deliveryIdParam, acceptLanguage],
        post: {
          operationId: 'redeliverWebhookDelivery',
          summary: 'Send a delivery again',
          description: 'A new delivery of the same event (same event id, same body), due now, signed with the current secret and retried like any other; it goes out even while the hook is turned off. The original stays in the log.',
          responses: { '202': { description: 'Queued.', content: json(ref('Redelivery')) }, ...problems(401, 403, 404) },
        },
      },
    },
    components: {
      securitySchemes: {
        backOffice: {
          type: 'oauth2',
          description: "A confidential client of the tenant allowed the client_credentials grant; tokens live 10 minutes.",
          flows: { clientCredentials: { tokenUrl: `${issuer}/token`, scopes: { [MANAGEMENT_SCOPE]: "Manage the tenant's accounts" } } },
        },
      },
      schemas: {
        Device: {
          type: 'object',
          additionalProperties: false,
          required: ['number', 'email', 'kind', 'verified'],
          properties: {
            number: { type: 'integer', minimum: 1 },
            email: { type: 'string', format: 'email' },
            kind: { type: 'string', enum: ['pc', 'mobile', 'smartphone'] },
            verified: { type: 'boolean' },
          },
        },
        DeviceInput: {
          type: 'object',
          additionalProperties: false,
          required: ['email'],
          properties: { email: { type: 'string', format: 'email', maxLength: EMAIL_ADDRESS_MAX_LENGTH, pattern: EMAIL_ADDRESS_PATTERN }, kind: { type: 'string', enum: ['pc', 'mobile', 'smartphone'], default: 'pc' } },
        },
        Account: { type: 'object', additionalProperties: false, required: accountRequired, properties: accountProperties },
        CreatedAccount: {
          type: 'object',
          additionalProperties: false,
          required: [...accountRequired, 'activation'],
          properties: { ...accountProperties, activation: ref('Activation') },
        },
        UpdatedAccount: {
          type: 'object',
          additionalProperties: false,
          required: accountRequired,
          properties: { ...accountProperties, activation: ref('Activation') },
        },
        Activation: {
          type: 'object',
          additionalProperties: false,
          required: ['url', 'expiresAt', 'mailed'],
          properties: {
            url: { type: 'string', format: 'uri', description: 'The activation page (初回認証) for this user.' },
            otp: { type: 'string', pattern: '^[0-9]{6,12}$', description: 'The activation one-time password; absent when it was mailed.' },
            expiresAt: dateTime,
            mailed: { type: 'boolean', description: "Whether the URL and code were mailed to the account's devices." },
          },
        },
        CreateAccountRequest: {
          type: 'object',
          additionalProperties: false,
          required: ['userId', 'devices'],
          properties: {
            userId: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$' },
            devices: { type: 'array', minItems: 1, maxItems: 50, items: ref('DeviceInput'), description: "At most the contract's max_devices." },
            loginMethod: { type: 'string', enum: [...LOGIN_METHODS], description: "One the contract allows; default: the contract's first." },
            sendActivation: { type: 'boolean', default: false, description: 'Mail the activation URL and code instead of returning the code.' },
            locale: { type: 'string', enum: [...LOCALES], default: 'ja', description: 'Language of the mail.' },
          },
        },
        UpdateAccountRequest: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            loginMethod: { type: 'string', enum: [...LOGIN_METHODS] },
            role: { type: ['string', 'null'], enum: [...ACCOUNT_ROLES, null], description: 'Makes the account staff of the support console (`support`, `admin`), or an ordinary account again (null).' },
            devices: { type: 'array', minItems: 1, maxItems: 50, items: ref('DeviceInput'), description: 'Replaces every device.' },
            sendActivation: { type: 'boolean', default: false, description: 'When the change needs a fresh activation: mail it instead of returning the code.' },
            locale: { type: 'string', enum: [...LOCALES], default: 'ja', description: 'Language of that mail.' },
          },
        },
        ActivationRequest: {
          type: 'object',
          additionalProperties: false,
          properties: { send: { type: 'boolean', default: false }, locale: { type: 'string', enum: [...LOCALES], default: 'ja' } },
        },
        UnlockRequest: {
          type: 'object',
          additionalProperties: false,
          properties: { locale: { type: 'string', enum: [...LOCALES], default: 'ja', description: 'Language of the mail to the user.' } },
        },
        LoginEvent: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'createdAt', 'result', 'method', 'clientId', 'sourceIp', 'userAgent'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            createdAt: dateTime,
            result: { type: 'string', description: 'success, wrong_otp, expired_otp, locked, ...' },
            method: nullableString,
            clientId: nullableString,
            sourceIp: nullableString,
            userAgent: nullableString,
          },
        },
        PageLinks: {
          type: 'object',
          additionalProperties: false,
          required: ['self', 'first'],
          properties: Object.fromEntries(['self', 'first', 'last', 'prev', 'next'].map((k) => [k, { type: 'string', format: 'uri-reference' }])),
        },
        AccountPage: {
          type: 'object',
          additionalProperties: false,
          required: ['items', 'page', 'perPage', 'total', 'links'],
          properties: {
            items: { type: 'array', items: ref('Account') },
            page: { type: 'integer', minimum: 1 },
            perPage: { type: 'integer', minimum: 1, maximum: 100 },
            total: { type: 'integer', minimum: 0 },
            links: { allOf: [ref('PageLinks')], required: ['last'] },
          },
        },
        LoginEventPage: {
          type: 'object',
          additionalProperties: false,
          required: ['items', 'page', 'perPage', 'links'],
          properties: {
            items: { type: 'array', items: ref('LoginEvent') },
            page: { type: 'integer', minimum: 1 },
            perPage: { type: 'integer', minimum: 1, maximum: 100 },
            links: { allOf: [ref('PageLinks')], description: '`next` is present when the page is full.' },
          },
        },
        AuditRecord: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'createdAt', 'tenant', 'actor', 'action', 'userId', 'sourceIp', 'requestId', 'before', 'after', 'outcome', 'error'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            createdAt: dateTime,
            tenant: { type: 'string' },
            actor: {
              type: 'object',
              additionalProperties: false,
              required: ['kind', 'id'],
              properties: { kind: { type: 'string', enum: [...ACTOR_KINDS] }, id: { type: 'string', description: 'client_id (api), user@host (cli), staff id (console).' } },
            },
            action: { type: 'string', enum: [...AUDIT_ACTIONS] },
            userId: nullableString,
            sourceIp: nullableString,
            requestId: { ...nullableString, description: 'The X-Request-Id of the API call.' },
            before: auditStateSchema,
            after: auditStateSchema,
            outcome: { type: 'string', enum: [...AUDIT_OUTCOMES], description: '`refused`: the request was turned down (validation error, not found, conflict) and changed nothing; `before` and `after` are null.' },
            error: { ...nullableString, description: 'The problem code of a refused action (`validation_failed`, `account_not_found`, `account_exists`, …); null when done.' },
          },
        },
        AuditPage: {
          type: 'object',
          additionalProperties: false,
          required: ['items', 'nextCursor', 'links'],
          properties: {
            items: { type: 'array', items: ref('AuditRecord') },
            nextCursor: { ...nullableString, description: 'Null on the last page.' },
            links: { type: 'object', additionalProperties: false, required: ['self'], properties: { self: { type: 'string', format: 'uri-reference' }, next: { type: 'string', format: 'uri-reference' } } },
          },
        },
        CreateWebhookRequest: {
          type: 'object',
          additionalProperties: false,
          required: ['url'],
          properties: {
            url: { type: 'string', format: 'uri', maxLength: 2048 },
            events: { type: 'array', minItems: 1, items: { type: 'string', enum: [...WEBHOOK_EVENTS] }, description: `Default: ${DEFAULT_EVENTS.join(', ')}.` },
            description: { type: 'string', maxLength: 200 },
          },
        },
        Webhook: { type: 'object', additionalProperties: false, required: webhookRequired, properties: webhookProperties },
        CreatedWebhook: {
          type: 'object',
          additionalProperties: false,
          required: [...webhookRequired, 'secret'],
          properties: { ...webhookProperties, secret: { type: 'string', pattern: '^whsec_[A-Za-z0-9_-]{43}$', description: 'The signing secret; shown only in this answer.' } },
        },
        UpdateWebhookRequest: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            url: { type: 'string', format: 'uri', maxLength: 2048 },
            events: { type: 'array', minItems: 1, items: { type: 'string', enum: [...WEBHOOK_EVENTS] } },
            description: { type: ['string', 'null'], maxLength: 200 },
            enabled: { type: 'boolean' },
          },
        },
        RotateSecretRequest: {
          type: 'object',
          additionalProperties: false,
          properties: { graceSeconds: { type: 'integer', minimum: 0, maximum: MAX_ROTATION_GRACE_SECONDS, default: ROTATION_GRACE_SECONDS, description: 'How long the replaced secret keeps signing.' } },
        },
        Redelivery: {
          type: 'object',
          additionalProperties: false,
          required: ['deliveryId', 'eventId', 'eventType', 'redeliveryOf'],
          properties: { deliveryId: { type: 'string', format: 'uuid' }, eventId: { type: 'string', format: 'uuid' }, eventType: { type: 'string' }, redeliveryOf: { type: 'string', format: 'uuid' } },
        },
        WebhookList: { type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: ref('Webhook') } } },
        QueuedDelivery: {
          type: 'object',
          additionalProperties: false,
          required: ['deliveryId', 'eventId', 'eventType'],
          properties: { deliveryId: { type: 'string', format: 'uuid' }, eventId: { type: 'string', format: 'uuid' }, eventType: { type: 'string', const: TEST_EVENT } },
        },
        Delivery: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'eventId', 'eventType', 'status', 'attempts', 'createdAt', 'nextAttemptAt', 'deliveredAt', 'failedAt', 'redeliveryOf', 'attemptLog'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            eventId: { type: 'string', format: 'uuid' },
            eventType: { type: 'string' },
            status: { type: 'string', enum: ['pending', 'delivered', 'failed'], description: '`failed`: given up after the last attempt.' },
            attempts: { type: 'integer', minimum: 0 },
            createdAt: dateTime,
            nextAttemptAt: { ...nullableDateTime, description: 'When a pending delivery is tried next.' },
            deliveredAt: nullableDateTime,
            failedAt: nullableDateTime,
            redeliveryOf: { type: ['string', 'null'], format: 'uuid', description: 'The delivery this one sends again (POST …/redeliver).' },
            attemptLog: {
              type: 'array',
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['number', 'at', 'statusCode', 'error', 'durationMs'],
                properties: {
                  number: { type: 'integer', minimum: 1 },
                  at: dateTime,
                  statusCode: { type: ['integer', 'null'], description: "The receiver's HTTP status; null when none came." },
                  error: { ...nullableString, description: 'Why the attempt failed (HTTP status, timeout, connection refused); null when delivered.' },
                  durationMs: { type: 'integer', minimum: 0 },
                },
              },
            },
          },
        },
        DeliveryPage: {
          type: 'object',
          additionalProperties: false,
          required: ['items', 'nextCursor', 'links'],
          properties: {
            items: { type: 'array', items: ref('Delivery') },
            nextCursor: nullableString,
            links: { type: 'object', additionalProperties: false, required: ['self'], properties: { self: { type: 'string', format: 'uri-reference' }, next: { type: 'string', format: 'uri-reference' } } },
          },
        },
        Problem: {
          type: 'object',
          description: 'RFC 9457 problem details.',
          required: ['type', 'title', 'status', 'detail'],
          properties: {
            type: { type: 'string', format: 'uri', description: 'urn:anshin-login:problem:<code>, e.g. validation_failed, account_exists.' },
            title: { type: 'string' },
            status: { type: 'integer', minimum: 400, maximum: 599 },
            detail: { type: 'string' },
            request_id: { type: 'string', description: 'The request\'s id (also in the X-Request-Id header): quote it when reporting a problem.' },
            errors: {
              type: 'array',
              description: 'For validation failures: each invalid field, named like `devices[0].email`.',
              items: { type: 'object', additionalProperties: false, required: ['field', 'message'], properties: { field: { type: 'string' }, message: { type: 'string' } } },
            },
          },
        },
      },
      responses: {
        Problem400: problemResponse('The request is not valid (the fields are named in `errors`), or its body is not JSON.'),
        Problem401: {
          ...problemResponse('No access token, or it is invalid or expired.'),
          headers: { 'WWW-Authenticate': { description: 'A Bearer challenge (RFC 6750).', schema: { type: 'string' } } },
        },
        Problem403: {
          ...problemResponse('The token lacks the management scope.'),
          headers: { 'WWW-Authenticate': { description: 'Bearer challenge with error="insufficient_scope".', schema: { type: 'string' } } },
        },
        Problem404: problemResponse('No such account (or webhook, or delivery of it) in the token\'s tenant.'),
        Problem409: problemResponse('The user ID is already registered.'),
        Problem413: problemResponse('The body is larger than 64 KiB.'),
        Problem415: problemResponse('The body is not application/json.'),
        Problem503: {
          ...problemResponse('The mail queue (Redis) is unreachable, so the mail this change sends could not be queued; try again shortly.'),
          headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } } },
        },
      },
    },
  };
}

function problemResponse(description: string) {
  return { description, content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
}
