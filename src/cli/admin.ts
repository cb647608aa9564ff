import { hostname, userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { toView, DEVICE_KINDS, type AccountStatusView, type DeviceKind } from '../account/account.service.js';
import { ConfigError, loadConfig, type AppConfig } from '../config/index.js';
import { AppError } from '../http/errors.js';
import { translator } from '../i18n/index.js';
import { createLogger } from '../logger.js';
import { DataDirLockedError } from '../persistence/data-dir-lock.js';
import { openDatabase } from '../persistence/database.js';
import { createDomainServices } from '../services.js';

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
  update <tenant> <user-id> [--method <m>] [--email <a>... [--kind k]] [--send]
                                           Change the login method and/or replace the devices; a
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
      status: { type: 'string' },
      page: { type: 'string', default: '1' },
      'per-page': { type: 'string', default: '20' },
      send: { type: 'boolean', default: false },
      yes: { type: 'boolean', default: false },
      tenant: { type: 'string' },
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
  const who = { actor: 'admin' as const, staff: { kind: 'cli' as const, id: `${operatorName()}@${hostname()}`, ip: null, requestId: null } };
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
        if (!values.method && !devices) throw new UsageError('update needs --method and/or --email');
        const updated = await accounts.update(tenantId, user, { loginMethod: values.method, devices, mailActivation: values.send }, who);
        const a = toView(updated);
        const fresh = updated.activation;
        out(
          [
            `updated ${tenantId}/${user}: method=${a.loginMethod}, ${a.devices.length} device(s)`,
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
