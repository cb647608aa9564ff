import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, TenantDirectory } from '../config/index.js';
import { AccountRepository } from '../persistence/account.repository.js';
import { openDatabase } from '../persistence/database.js';

const HELP = `Usage: npm run admin -- <command> [options]

Operator commands, run against the configured database (DATABASE_URL, or the embedded one under DATA_DIR).

Commands:
  tenants                                  List tenants and their clients from the tenants file
  unlock <tenant> <user-id>                Unlock a locked account and clear its failure counter
  create-account <tenant> <user-id> --email <address> [--email <address>...] [--kind pc|mobile|smartphone]
                                           Create an active account with one device per address
  show <tenant> <user-id>                  Show an account, its devices and lock state

Options:
  --json      Machine-readable output
  -h, --help  Show this help

Exit codes: 0 done, 1 failed (message on stderr), 2 bad usage.
`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      email: { type: 'string', multiple: true },
      kind: { type: 'string', default: 'pc' },
    },
  });
  const [command, ...args] = positionals;
  if (values.help || !command) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const out = (human: string, data: unknown) => process.stdout.write(values.json ? `${JSON.stringify(data)}\n` : `${human}\n`);
  const config = loadConfig();
  const tenants = new TenantDirectory(config.tenants);

  if (command === 'tenants') {
    const data = config.tenants.map((t) => ({ id: t.id, name: t.name, contract: t.contract, clients: t.clients.map((c) => ({ client_id: c.client_id, name: c.name, public: !c.client_secret })) }));
    out(data.map((t) => `${t.id}\t${t.name}\t${t.clients.map((c) => c.client_id).join(',')}`).join('\n'), data);
    return 0;
  }

  const [tenantId, userId] = args;
  if (!tenantId || !userId) throw new UsageError(`${command} needs <tenant> <user-id>`);
  if (!tenants.tenant(tenantId)) throw new UsageError(`unknown tenant "${tenantId}" (see: npm run admin -- tenants)`);

  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    const accounts = new AccountRepository(db.prisma);
    switch (command) {
      case 'unlock': {
        const done = await accounts.unlock(tenantId, userId);
        if (!done) throw new Error(`no account ${tenantId}/${userId}`);
        out(`unlocked ${tenantId}/${userId}`, { tenant: tenantId, userId, unlocked: true });
        return 0;
      }
      case 'create-account': {
        const emails = values.email ?? [];
        if (emails.length === 0) throw new UsageError('create-account needs at least one --email');
        if (!['pc', 'mobile', 'smartphone'].includes(values.kind ?? '')) throw new UsageError('--kind must be pc, mobile or smartphone');
        if (await accounts.findByUserId(tenantId, userId)) throw new Error(`account ${tenantId}/${userId} already exists`);
        const kind = values.kind as 'pc' | 'mobile' | 'smartphone';
        const created = await accounts.create({ tenantId, userId, devices: emails.map((email) => ({ email, kind })) });
        out(`created ${tenantId}/${userId} with ${created.devices.length} device(s)`, { tenant: tenantId, userId, id: created.id, devices: created.devices.map((d) => d.email) });
        return 0;
      }
      case 'show': {
        const a = await accounts.findByUserId(tenantId, userId);
        if (!a) throw new Error(`no account ${tenantId}/${userId}`);
        const data = {
          tenant: a.tenantId,
          userId: a.userId,
          status: a.status,
          loginMethod: a.loginMethod,
          locked: a.lockedAt !== null,
          failedAttempts: a.failedAttempts,
          lastLoginAt: a.lastLoginAt,
          devices: a.devices.map((d) => ({ number: d.number, email: d.email, kind: d.kind, verified: d.verifiedAt !== null })),
        };
        out(
          [`${data.tenant}/${data.userId}  status=${data.status}  method=${data.loginMethod}  locked=${data.locked}  failures=${data.failedAttempts}`, ...data.devices.map((d) => `  #${d.number} ${d.email} (${d.kind})${d.verified ? '' : ' unverified'}`)].join('\n'),
          data,
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } finally {
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
    process.stderr.write(`${e instanceof ConfigError ? e.message : `error: ${(e as Error).message}`}\n`);
    process.exit(1);
  },
);
