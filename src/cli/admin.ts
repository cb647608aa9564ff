import { ACCOUNT_ROLES, type AccountRole } from '../persistence/account.repository.js';
import type { StaffActor } from '../audit/audit.service.js';
import { hostname, userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { toView, DEVICE_KINDS, type AccountStatusView, type DeviceKind } from '../account/account.service.js';
import { ConfigError, loadConfig, type AppConfig } from '../config/index.js';
import { AppError } from '../http/errors.js';
import { translator } from '../i18n/index.js';
import { createLogger } from '../logger.js';
import { DataDirLockedError } from '../persistence/data-dir-lock.js';
import { openDatabase } from '../persistence/database.js';
import { createDomainServices, type DomainServices } from '../services.js';
import { ACTOR_KINDS, AUDIT_ACTIONS, AUDIT_OUTCOMES, auditView, decodeCursor, type AuditAction, type ActorKind } from '../audit/audit.service.js';
import type { AuditFilter, AuditOutcome } from '../persistence/audit.repository.js';
import { WEBHOOK_EVENTS, type WebhookEventType } from '../webhooks/webhook-events.js';
import { webhookView } from '../webhooks/webhook.service.js';

const HELP = `Usage: npm run admin -- <command> [options]

Operator commands, run against the configured database directly (DATABASE_URL, or the embedded one
under DATA_DIR — stop the provider first, the embedded database allows one process).

Commands:
  tenants                                  List tenants, their contracts and clients (config)
  clients [<tenant>]                       List clients (config)
  create <tenant> <user-id> --email <a> [--email <b>...] [--kind pc|mobile|smartphone] [--method <m>] [--send]
                                           Create an account waiting for activation; prints the
                                           activation URL and one-time password (--send mails them instead)
  list <tenant> [--status pending_activation|active|locked] [--page N] [--per-page N]
  show <tenant> <user-id>                  An account, its devices and lock state
  update <tenant> <user-id> [--method <m>] [--email <a>... [--kind k]] [--role support|admin|none] [--send]
                                           Change the login method, the staff role (support console)
                                           and/or replace the devices; a
                                           method needing credentials the account lacks (password,
                                           certificate) issues a fresh activation (printed, or mailed
                                           with --send). A method change signs the account out everywhere
  activation <tenant> <user-id> [--send]   Issue a fresh activation (the old code stops working)
  unlock <tenant> <user-id>                Unlock a locked account (the user is told by mail)
  delete <tenant> <user-id> --yes          Delete an account with its devices, events, sessions, grants
  events <tenant> <user-id> [--page N]     Login events, newest first
  mail undelivered [--tenant <t>] [--per-page N]
                                           Mail waiting for delivery or given up: template, masked
                                           recipients, age, attempts, last error (never the content)
  audit list <tenant> [--user <id>] [--action <a>] [--actor-kind api|cli|console] [--outcome done|refused]
             [--since <ISO time>] [--until <ISO time>] [--per-page N] [--cursor <c>]
                                           The staff audit trail, newest first (the next page's
                                           --cursor is printed at the end)
  audit export <tenant> [same filters]     Every matching record as JSON Lines on stdout
  webhooks list <tenant>                   The tenant's webhooks (never their secrets)
  webhooks register <tenant> --url <u> [--event <type>...] [--description <d>]
                                           Register a receiver; prints its signing secret, this once
  webhooks test <tenant> <id>              Queue a webhook.test event for the hook (the running
                                           provider sends it)
  webhooks delete <tenant> <id> --yes      Delete a hook with its delivery log

Options:
  --json      Machine-readable output (one JSON document on stdout)
  -h, --help  Show this help

Exit codes: 0 done, 1 failed (message on stderr), 2 bad usage.
`;

class UsageError extends Error {}

const t = translator('en');

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      email: { type: 'string', multiple: true },
      kind: { type: 'string' },
      method: { type: 'string' },
      role: { type: 'string' },
      status: { type: 'string' },
      page: { type: 'string', default: '1' },
      'per-page': { type: 'string', default: '20' },
      send: { type: 'boolean', default: false },
      yes: { type: 'boolean', default: false },
      tenant: { type: 'string' },
      user: { type: 'string' },
      action: { type: 'string' },
      'actor-kind': { type: 'string' },
      outcome: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      cursor: { type: 'string' },
      url: { type: 'string' },
      event: { type: 'string', multiple: true },
      description: { type: 'string' },
    },
  });
  const [command, ...args] = positionals;
  if (values.help || !command) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const out = (human: string, data: unknown) => process.stdout.write(values.json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
  const config = loadConfig();

  if (command === 'tenants' || command === 'clients') {
    const only = command === 'clients' ? args[0] : undefined;
    const tenants = config.tenants.filter((x) => !only || x.id === only);
    if (only && tenants.length === 0) throw new UsageError(`unknown tenant "${only}"`);
    const data = tenants.map((x) => ({
      id: x.id,
      name: x.name,
      contract: x.contract,
      clients: x.clients.map((c) => ({ client_id: c.client_id, name: c.name, public: !c.client_secret, first_party: c.first_party, grant_types: ['authorization_code', 'refresh_token', ...c.extra_grant_types], redirect_uris: c.redirect_uris })),
    }));
    if (command === 'clients') {
      const rows = data.flatMap((x) => x.clients.map((c) => ({ tenant: x.id, ...c })));
      out(rows.map((c) => `${c.tenant}\t${c.client_id}\t${c.name}\t${c.public ? 'public' : 'confidential'}\t${c.grant_types.join(',')}`).join('\n'), rows);
    } else {
      out(data.map((x) => `${x.id}\t${x.name}\tmethods=${x.contract.login_methods.join(',')}\tclients=${x.clients.map((c) => c.client_id).join(',')}`).join('\n'), data);
    }
    return 0;
  }

  if (command === 'mail') return mailCommand(config, args, values, out);
  if (command === 'audit') return auditCommand(config, args, values, out);
  if (command === 'webhooks') return webhooksCommand(config, args, values, out);

  const [tenantId, userId] = args;
  if (!tenantId) throw new UsageError(`${command} needs <tenant>`);
  if (!config.tenants.some((x) => x.id === tenantId)) throw new UsageError(`unknown tenant "${tenantId}" (see: npm run admin -- tenants)`);
  const needsUser = command !== 'list';
  if (needsUser && !userId) throw new UsageError(`${command} needs <tenant> <user-id>`);
  const page = Number(values.page);
  const perPage = Number(values['per-page']);
  if (!Number.isInteger(page) || page < 1 || !Number.isInteger(perPage) || perPage < 1 || perPage > 200) throw new UsageError('--page must be >= 1 and --per-page 1..200');
  const kind = (values.kind ?? 'pc') as DeviceKind;
  if (!DEVICE_KINDS.includes(kind)) throw new UsageError('--kind must be pc, mobile or smartphone');
  const devices = values.email?.map((email) => ({ email, kind }));
  // The audit trail names the operator by the OS account that ran the command.
  const who = { actor: 'admin' as const, staff: { kind: 'cli' as const, id: `${operatorName()}@${hostname()}`, ip: null, requestId: null } satisfies StaffActor };
  const known = ['create', 'create-account', 'list', 'show', 'update', 'activation', 'unlock', 'delete', 'events'];
  if (!known.includes(command)) throw new UsageError(`unknown command "${command}"`);
  if (command === 'delete' && !values.yes) throw new UsageError('delete removes the account and all its data: add --yes to confirm');

  const logger = createLogger('warn', 'admin');
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  // The CLI delivers the mail it queues itself (close() below) and leaves the outbox's other mail to the provider.
  const services = createDomainServices({ config, db, logger, mailQueue: { outbox: { onlyOwn: true } } });
  // Sites registered for back-channel logout hear of the sessions these commands end.
  // Loaded only here: oidc-provider is heavy to import and warns about the runtime on load.
  if (['update', 'activation', 'delete'].includes(command)) {
    const { backchannelNotifier } = await import('../oidc/backchannel.js');
    services.lifecycle.useNotifier(await backchannelNotifier(config, services));
  }
  const accounts = services.accountService;
  const user = userId ?? '';
  try {
    switch (command) {
      case 'create':
      case 'create-account': {
        if (!devices?.length) throw new UsageError(`${command} needs at least one --email`);
        const { account, activation } = await accounts.create(tenantId, { userId: user, devices, loginMethod: values.method, mailActivation: values.send }, who);
        const view = { ...toView(account), activation: { url: activation.url, expiresAt: activation.expiresAt.toISOString(), ...(values.send ? { sent: true } : { otp: activation.otp }) } };
        out(
          [
            `created ${tenantId}/${user} with ${account.devices.length} device(s), waiting for activation`,
            `activation URL: ${activation.url}`,
            values.send ? 'activation code mailed to the device addresses' : `activation one-time password: ${activation.otp}`,
            `expires: ${activation.expiresAt.toISOString()}`,
          ].join('\n'),
          view,
        );
        return 0;
      }
      case 'list': {
        const status = values.status as AccountStatusView | undefined;
        if (status && !['pending_activation', 'active', 'locked'].includes(status)) throw new UsageError('--status must be pending_activation, active or locked');
        const r = await accounts.list(tenantId, { status, page, perPage });
        const items = r.items.map(toView);
        out(
          [...items.map((a) => `${a.userId}\t${a.status}\t${a.loginMethod}\t${a.devices.map((d) => d.email).join(',')}`), `${items.length ? (page - 1) * perPage + 1 : 0}-${(page - 1) * perPage + items.length} of ${r.total}`].join('\n'),
          { items, total: r.total, page, perPage },
        );
        return 0;
      }
      case 'show': {
        const a = toView(await accounts.find(tenantId, user));
        out(
          [
            `${a.tenant}/${a.userId}  status=${a.status}  method=${a.loginMethod}  failures=${a.failedAttempts}  last login=${a.lastLoginAt ?? '-'}`,
            ...a.devices.map((d) => `  #${d.number} ${d.email} (${d.kind})${d.verified ? '' : ' unverified'}`),
          ].join('\n'),
          a,
        );
        return 0;
      }
      case 'update': {
        if (!values.method && !devices && values.role === undefined) throw new UsageError('update needs --method, --role and/or --email');
        const role = values.role === undefined ? undefined : values.role === 'none' ? null : oneOf<AccountRole>(values.role, ACCOUNT_ROLES, '--role')!;
        const updated = await accounts.update(tenantId, user, { loginMethod: values.method, role, devices, mailActivation: values.send }, who);
        const a = toView(updated);
        const fresh = updated.activation;
        out(
          [
            `updated ${tenantId}/${user}: method=${a.loginMethod}, role=${a.role ?? 'none'}, ${a.devices.length} device(s)`,
            // The new method needs credentials the account lacks: the user sets them at a fresh activation.
            ...(fresh ? [`the new method needs credentials the account does not have: activation again at ${fresh.url}`, values.send ? 'mailed to the device addresses' : `activation one-time password: ${fresh.otp}`] : []),
          ].join('\n'),
          fresh ? { ...a, activation: { url: fresh.url, expiresAt: fresh.expiresAt.toISOString(), ...(values.send ? { sent: true } : { otp: fresh.otp }) } } : a,
        );
        return 0;
      }
      case 'activation': {
        const r = await accounts.issueActivation(tenantId, user, { ...who, mail: values.send });
        out(
          [`fresh activation for ${tenantId}/${user} (the previous code no longer works)`, `activation URL: ${r.url}`, values.send ? 'mailed to the device addresses' : `activation one-time password: ${r.otp}`].join('\n'),
          { url: r.url, expiresAt: r.expiresAt.toISOString(), ...(values.send ? { sent: true } : { otp: r.otp }) },
        );
        return 0;
      }
      case 'unlock': {
        const a = toView(await accounts.unlock(tenantId, user, who));
        out(`unlocked ${tenantId}/${user}`, { ...a, unlocked: true });
        return 0;
      }
      case 'delete': {
        await accounts.delete(tenantId, user, who);
        out(`deleted ${tenantId}/${user}`, { tenant: tenantId, userId: user, deleted: true });
        return 0;
      }
      case 'events': {
        const r = await accounts.loginEvents(tenantId, user, { page, perPage });
        const items = r.items.map((e) => ({ time: e.createdAt.toISOString(), ip: e.sourceIp, client: e.clientId, method: e.method, result: e.result, userAgent: e.userAgent }));
        out(items.map((e) => `${e.time}\t${e.ip ?? '-'}\t${e.client ?? '-'}\t${e.method ?? '-'}\t${e.result}`).join('\n') || '(no events)', { items, page, perPage });
        return 0;
      }
    }
    return 2;
  } finally {
    // Let queued notices go out before the process ends.
    await services.mail.close();
    await db.close();
  }
}

function operatorName(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry for the uid (some containers).
    return `uid-${process.getuid?.() ?? 'unknown'}`;
  }
}

/** `mail undelivered`: what operators need to chase a lost message, without its content. */
async function mailCommand(config: AppConfig, args: string[], values: { tenant?: string; 'per-page': string }, out: (human: string, data: unknown) => void): Promise<number> {
  if (args[0] !== 'undelivered') throw new UsageError('mail needs a subcommand: undelivered');
  if (values.tenant && !config.tenants.some((x) => x.id === values.tenant)) throw new UsageError(`unknown tenant "${values.tenant}" (see: npm run admin -- tenants)`);
  const limit = Number(values['per-page']);
  if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new UsageError('--per-page must be 1..200');
  const logger = createLogger('warn', 'admin');
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  // Lists only: this process delivers nothing of the provider's outbox.
  const services = createDomainServices({ config, db, logger, mailQueue: { outbox: { onlyOwn: true } } });
  try {
    const items = await services.mail.undelivered({ tenantId: values.tenant, limit });
    const age = (d: Date) => {
      const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
      return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
    };
    out(
      items
        .map((m) => `${m.status}\t${m.template}\t${m.tenantId ?? '-'}\t${m.recipients} (${m.maskedTo.join(',')})\tage ${age(m.createdAt)}\tattempts ${m.attempts}\t${m.lastError ?? '-'}`)
        .join('\n') || '(no undelivered mail)',
      { items },
    );
    return 0;
  } finally {
    await services.mail.close();
    await db.close();
  }
}

/** Opens the database and the domain services for one command, and closes them after it. */
async function withServices<T>(config: AppConfig, run: (services: DomainServices) => Promise<T>): Promise<T> {
  const logger = createLogger('warn', 'admin');
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const services = createDomainServices({ config, db, logger, mailQueue: { outbox: { onlyOwn: true } } });
  try {
    return await run(services);
  } finally {
    await services.mail.close();
    await db.close();
  }
}

function knownTenant(config: AppConfig, tenantId: string | undefined, usage: string): string {
  if (!tenantId) throw new UsageError(`${usage} needs <tenant>`);
  if (!config.tenants.some((x) => x.id === tenantId)) throw new UsageError(`unknown tenant "${tenantId}" (see: npm run admin -- tenants)`);
  return tenantId;
}

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], option: string): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${option} must be one of: ${allowed.join(', ')}`);
  return value as T;
}

function timeOption(value: string | undefined, option: string): Date | undefined {
  if (value === undefined) return undefined;
  // An ISO 8601 date-time (with a zone), as the API's since/until.
  const at = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value) ? new Date(value) : undefined;
  if (!at || Number.isNaN(at.getTime())) throw new UsageError(`${option} must be an ISO 8601 time such as 2026-11-30T09:00:00Z`);
  return at;
}

type AuditValues = { user?: string; action?: string; 'actor-kind'?: string; outcome?: string; since?: string; until?: string; cursor?: string; 'per-page': string };

/** `audit list` (one page, newest first) and `audit export` (JSON Lines), as GET /api/v1/audit and /audit/export. */
async function auditCommand(config: AppConfig, args: string[], values: AuditValues, out: (human: string, data: unknown) => void): Promise<number> {
  const [sub, tenantArg] = args;
  if (sub !== 'list' && sub !== 'export') throw new UsageError('audit needs a subcommand: list or export');
  const tenantId = knownTenant(config, tenantArg, `audit ${sub}`);
  const since = timeOption(values.since, '--since');
  const until = timeOption(values.until, '--until');
  if (since && until && since >= until) throw new UsageError('--since must be before --until');
  const filter: AuditFilter = {
    tenantId,
    userId: values.user,
    action: oneOf<AuditAction>(values.action, AUDIT_ACTIONS, '--action'),
    actorKind: oneOf<ActorKind>(values['actor-kind'], ACTOR_KINDS, '--actor-kind'),
    outcome: oneOf<AuditOutcome>(values.outcome, AUDIT_OUTCOMES, '--outcome'),
    since,
    until,
  };
  const limit = Number(values['per-page']);
  if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new UsageError('--per-page must be 1..200');
  const cursor = values.cursor === undefined ? undefined : decodeCursor(values.cursor);
  if (values.cursor !== undefined && !cursor) throw new UsageError('--cursor is not valid: use the one the previous page printed');
  return withServices(config, async ({ audit }) => {
    if (sub === 'export') {
      // Streamed: records are written as the batches are read.
      for await (const r of audit.all(filter)) {
        if (!process.stdout.write(`${JSON.stringify(auditView(r))}\n`)) await new Promise((resolve) => process.stdout.once('drain', resolve));
      }
      return 0;
    }
    const { items, next } = await audit.list(filter, { cursor, limit });
    const views = items.map(auditView);
    out(
      [
        ...views.map((r) => `${r.createdAt}\t${r.actor.kind}:${r.actor.id}\t${r.action}\t${r.userId ?? '-'}\t${r.outcome}${r.error ? ` (${r.error})` : ''}`),
        ...(views.length ? [] : ['(no records)']),
        ...(next ? [`more: --cursor ${next}`] : []),
      ].join('\n'),
      { items: views, nextCursor: next },
    );
    return 0;
  });
}

type WebhookValues = { url?: string; event?: string[]; description?: string; yes: boolean };

/** `webhooks list|register|test|delete`, as the management API's /webhooks within one tenant. */
async function webhooksCommand(config: AppConfig, args: string[], values: WebhookValues, out: (human: string, data: unknown) => void): Promise<number> {
  const [sub, tenantArg, id] = args;
  if (!sub || !['list', 'register', 'test', 'delete'].includes(sub)) throw new UsageError('webhooks needs a subcommand: list, register, test or delete');
  const tenantId = knownTenant(config, tenantArg, `webhooks ${sub}`);
  if ((sub === 'test' || sub === 'delete') && !id) throw new UsageError(`webhooks ${sub} needs <tenant> <id>`);
  if (sub === 'delete' && !values.yes) throw new UsageError('webhooks delete removes the hook and its delivery log: add --yes to confirm');
  if (sub === 'register' && !values.url) throw new UsageError('webhooks register needs --url');
  const events = values.event?.map((e) => oneOf<WebhookEventType>(e, WEBHOOK_EVENTS, '--event')!);
  const operator: StaffActor = { kind: 'cli', id: `${operatorName()}@${hostname()}`, ip: null, requestId: null };
  return withServices(config, async ({ webhooks }) => {
    switch (sub) {
      case 'list': {
        const items = (await webhooks.list(tenantId)).map((h) => webhookView(h));
        out(items.map((h) => `${h.id}\t${h.enabled ? 'enabled' : 'disabled'}\t${h.url}\t${h.events.join(',')}\t${h.description ?? ''}`).join('\n') || '(no webhooks)', { items });
        return 0;
      }
      case 'register': {
        const { hook, secret } = await webhooks.register(tenantId, { url: values.url!, events, description: values.description }, `cli:${operator.id}`, operator);
        const view = { ...webhookView(hook), secret };
        out([`registered webhook ${hook.id} for ${tenantId}: ${hook.url}`, `events: ${hook.events.join(', ')}`, `signing secret (shown this once): ${secret}`].join('\n'), view);
        return 0;
      }
      case 'test': {
        const d = await webhooks.test(tenantId, id!, operator);
        out(`queued webhook.test ${d.eventId} for webhook ${id}: the running provider sends it`, { deliveryId: d.id, eventId: d.eventId, eventType: d.eventType });
        return 0;
      }
      default: {
        await webhooks.delete(tenantId, id!, operator);
        out(`deleted webhook ${id}`, { id, deleted: true });
        return 0;
      }
    }
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${(e as Error).message}\n\n${HELP}`);
      process.exit(2);
    }
    if (e instanceof DataDirLockedError) {
      process.stderr.write(`error: ${e.message}: stop the provider first, or use the management API (/api/v1) while it runs\n`);
      process.exit(1);
    }
    const message = e instanceof AppError ? `${e.code}: ${t(e.messageKey, e.params)}` : e instanceof ConfigError ? e.message : `error: ${(e as Error).message}`;
    process.stderr.write(`${message}\n`);
    process.exit(1);
  },
);
