import { isLocked } from '../lockout/account-lock.js';
import type { AccountWithDevices } from '../persistence/account.repository.js';
import type { AuditCursor, AuditFilter, AuditOutcome, AuditRecord, AuditRepository } from '../persistence/audit.repository.js';
import type { PurgeOptions } from '../persistence/purge.js';

/** Who made a staff change: a back-office client (its client_id), an operator at the CLI, support staff. */
export const ACTOR_KINDS = ['api', 'cli', 'console'] as const;
export type ActorKind = (typeof ACTOR_KINDS)[number];

export interface StaffActor {
  kind: ActorKind;
  /** The management API's client_id, the CLI's `user@host`, the console's staff id. */
  id: string;
  ip: string | null;
  requestId: string | null;
}

export const AUDIT_ACTIONS = [
  'account.created',
  'account.updated',
  'account.deleted',
  'account.unlocked',
  'account.activation_issued',
  // Support console (src/console/): ending all sessions, revoking a device's certificate.
  'account.sessions_ended',
  'account.certificate_revoked',
  // The tenant's webhooks (API, console, CLI): their state before and after, never the secret.
  'webhook.registered',
  'webhook.updated',
  'webhook.secret_rotated',
  'webhook.deleted',
  'webhook.tested',
  'webhook.redelivered',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];
/** `done`: the change was made; `refused`: the request was turned down (nothing changed), `error` says why. */
export const AUDIT_OUTCOMES = ['done', 'refused'] as const satisfies readonly AuditOutcome[];

/**
 * An account's state as the audit trail keeps it, before and after a change: what support staff need
 * to see what changed, never a secret (no password or answer hash, no code, no certificate).
 */
export interface AuditState {
  status: string;
  locked: boolean;
  lockedUntil: string | null;
  failedAttempts: number;
  loginMethod: string;
  /** Staff role (support console), null for an ordinary account. */
  role: string | null;
  devices: Array<{ number: number; email: string; kind: string; verified: boolean }>;
}

/** A webhook's state as the audit trail keeps it (its signing secrets never). */
export interface WebhookAuditState {
  id: string;
  url: string;
  events: string[];
  description: string | null;
  enabled: boolean;
}

/** What a record's before and after hold: an account's state, or a webhook's. */
export type AuditSubjectState = AuditState | WebhookAuditState;

export function auditState(a: AccountWithDevices): AuditState {
  const locked = isLocked(a);
  return {
    status: a.status,
    locked,
    lockedUntil: locked ? (a.lockedUntil?.toISOString() ?? null) : null,
    failedAttempts: a.failedAttempts,
    loginMethod: a.loginMethod,
    role: a.role,
    devices: a.devices.map((d) => ({ number: d.number, email: d.email, kind: d.kind, verified: d.verifiedAt !== null })),
  };
}

/** An audit record as the management API and its JSON Lines export show it. */
export interface AuditRecordView {
  id: string;
  createdAt: string;
  tenant: string;
  actor: { kind: string; id: string };
  action: string;
  userId: string | null;
  sourceIp: string | null;
  requestId: string | null;
  before: unknown;
  after: unknown;
  outcome: AuditOutcome;
  /** The error code of a refused action (e.g. `validation_failed`, `account_not_found`, `account_exists`). */
  error: string | null;
}

export function auditView(r: AuditRecord): AuditRecordView {
  return {
    id: r.id,
    createdAt: r.createdAt.toISOString(),
    tenant: r.tenantId,
    actor: { kind: r.actorKind, id: r.actorId },
    action: r.action,
    userId: r.targetUserId,
    sourceIp: r.sourceIp,
    requestId: r.requestId,
    before: r.before ?? null,
    after: r.after ?? null,
    outcome: r.outcome as AuditOutcome,
    error: r.errorCode,
  };
}

/** Opaque page cursors: the last record's time and id. */
export function encodeCursor(r: AuditCursor): string {
  return Buffer.from(`${r.createdAt.toISOString()}|${r.id}`, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): AuditCursor | undefined {
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const createdAt = new Date(at ?? '');
  if (!id || Number.isNaN(createdAt.getTime()) || !/^[0-9a-f-]{36}$/.test(id)) return undefined;
  return { createdAt, id };
}

const EXPORT_BATCH = 500;

/**
 * The staff audit trail. Account changes made by staff (management API, CLI, later the support
 * console) are recorded by AccountService with the state before and after; reads are tenant-scoped.
 */
export class AuditService {
  constructor(private readonly repo: AuditRepository) {}

  record(input: { tenantId: string; who: StaffActor; action: AuditAction; userId: string | null; before: AuditSubjectState | null; after: AuditSubjectState | null }): Promise<AuditRecord> {
    return this.write(input, { before: input.before, after: input.after });
  }

  /**
   * A staff action turned down (validation error, not found, conflict): recorded too, so the trail
   * shows attempts. Nothing changed, so there is no state before or after.
   */
  recordRefusal(input: { tenantId: string; who: StaffActor; action: AuditAction; userId: string | null; errorCode: string }): Promise<AuditRecord> {
    return this.write(input, { before: null, after: null, outcome: 'refused', errorCode: input.errorCode });
  }

  private write(
    input: { tenantId: string; who: StaffActor; action: AuditAction; userId: string | null },
    what: { before: AuditSubjectState | null; after: AuditSubjectState | null; outcome?: 'refused'; errorCode?: string },
  ): Promise<AuditRecord> {
    const { who } = input;
    return this.repo.record({
      tenantId: input.tenantId,
      actorKind: who.kind,
      actorId: who.id,
      action: input.action,
      targetUserId: input.userId,
      sourceIp: who.ip,
      requestId: who.requestId,
      ...what,
    });
  }

  /** One page, newest first, and the cursor of the next page when there may be one. */
  async list(filter: AuditFilter, opts: { cursor?: AuditCursor; limit: number }): Promise<{ items: AuditRecord[]; next: string | null }> {
    const rows = await this.repo.list(filter, { after: opts.cursor, take: opts.limit + 1 });
    const items = rows.slice(0, opts.limit);
    const last = items.at(-1);
    return { items, next: rows.length > opts.limit && last ? encodeCursor(last) : null };
  }

  /** Housekeeping: records past AUDIT_RETENTION_DAYS go, in batches. */
  purgeOlderThan(cutoff: Date, opts: PurgeOptions): Promise<number> {
    return this.repo.purgeOlderThan(cutoff, opts);
  }

  /** Every matching record, newest first, read in batches (for a streamed export). */
  async *all(filter: AuditFilter): AsyncGenerator<AuditRecord> {
    let after: AuditCursor | undefined;
    for (;;) {
      const rows = await this.repo.list(filter, { after, take: EXPORT_BATCH });
      yield* rows;
      if (rows.length < EXPORT_BATCH) return;
      after = rows.at(-1)!;
    }
  }
}
