import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoginFlow, PrismaClient } from './generated/client.js';
import { LOCK_IN_FORCE } from './account.repository.js';
import { purgeInBatches, type PurgeOptions } from './purge.js';
import { asDate, sqlThroughPrisma, type Sql } from './sql.js';

export type { LoginFlow } from './generated/client.js';

/** The columns of `login_flows f` for flowFromRow. */
export const FLOW_COLUMNS = 'f.id, f.interaction_uid, f.tenant_id, f.client_id, f.account_id, f.submitted_user_id, f.method, f.completed_factors, f.state, f.step_up_declined, f.expires_at, f.created_at, f.updated_at';

export interface FlowRow {
  id: string;
  interaction_uid: string;
  tenant_id: string;
  client_id: string;
  account_id: string | null;
  submitted_user_id: string | null;
  method: string | null;
  completed_factors: string[];
  state: string;
  step_up_declined: boolean;
  expires_at: Date;
  created_at: Date;
  updated_at: Date;
}

export function flowFromRow(r: FlowRow): LoginFlow {
  return {
    id: r.id,
    interactionUid: r.interaction_uid,
    tenantId: r.tenant_id,
    clientId: r.client_id,
    accountId: r.account_id,
    submittedUserId: r.submitted_user_id,
    method: r.method,
    completedFactors: r.completed_factors,
    state: r.state,
    stepUpDeclined: r.step_up_declined,
    expiresAt: asDate(r.expires_at),
    createdAt: asDate(r.created_at),
    updatedAt: asDate(r.updated_at),
  };
}

/** Marks a code used if it still is unused and unexpired (a CTE of the statement that moves the flow). */
const CONSUME_CODE = (param: string) =>
  `UPDATE one_time_passwords SET consumed_at = now() WHERE id = ${param}::uuid AND consumed_at IS NULL AND expires_at > now() RETURNING id`;

/** Persisted login flows, one per oidc-provider interaction. Raw SQL: every login step reads or moves one. */
export class LoginFlowRepository {
  private readonly sql: Sql;

  constructor(
    private readonly prisma: PrismaClient,
    sql?: Sql,
  ) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  async findByInteraction(interactionUid: string): Promise<LoginFlow | null> {
    const rows = await this.sql.query<FlowRow>(`SELECT ${FLOW_COLUMNS} FROM login_flows f WHERE f.interaction_uid = $1`, [interactionUid]);
    return rows[0] ? flowFromRow(rows[0]) : null;
  }

  /**
   * Returns the interaction's flow, creating it on first sight, in one statement in the usual case:
   * INSERT ... ON CONFLICT DO NOTHING RETURNING gives the new row. Parallel first requests of an
   * interaction (Prisma's upsert is a read then a write) would otherwise collide on the unique key;
   * the one that loses the race reads the winner's row.
   */
  async create(input: { interactionUid: string; tenantId: string; clientId: string; expiresAt: Date }): Promise<LoginFlow> {
    // Only a concurrent delete (housekeeping of an expired flow) can take it away in between: once more.
    for (let attempt = 0; attempt < 2; attempt++) {
      const rows = await this.sql.query<FlowRow>(
        `INSERT INTO login_flows AS f (id, interaction_uid, tenant_id, client_id, expires_at, updated_at)
         VALUES ($1::uuid, $2, $3, $4, $5, now())
         ON CONFLICT (interaction_uid) DO NOTHING
         RETURNING ${FLOW_COLUMNS}`,
        [randomUUID(), input.interactionUid, input.tenantId, input.clientId, input.expiresAt],
      );
      const flow = rows[0] ? flowFromRow(rows[0]) : await this.findByInteraction(input.interactionUid);
      if (flow) return flow;
    }
    throw new Error(`login flow of ${input.interactionUid} vanished twice`);
  }

  /**
   * The user-ID step of a flow that has no row yet: stores it already identified, in one statement.
   * Also moves a stored flow that is back at the user-ID step (a restart); false when the
   * interaction's flow has left that step already (a concurrent submission). Returns the flow's id.
   */
  async createIdentified(
    input: { id: string; interactionUid: string; tenantId: string; clientId: string; expiresAt: Date },
    data: Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state'>,
  ): Promise<string | null> {
    const rows = await this.sql.query<{ id: string }>(
      `INSERT INTO login_flows AS f (id, interaction_uid, tenant_id, client_id, expires_at, account_id, submitted_user_id, method, completed_factors, state, updated_at)
       VALUES ($1::uuid, $2, $3, $4, $5, $6::uuid, $7, $8, $9, $10, now())
       ON CONFLICT (interaction_uid) DO UPDATE
         SET account_id = EXCLUDED.account_id, submitted_user_id = EXCLUDED.submitted_user_id, method = EXCLUDED.method,
             completed_factors = EXCLUDED.completed_factors, state = EXCLUDED.state, updated_at = now()
         WHERE f.state = 'identify'
       RETURNING f.id`,
      [input.id, input.interactionUid, input.tenantId, input.clientId, input.expiresAt, data.accountId, data.submittedUserId, data.method, data.completedFactors, data.state],
    );
    return rows[0]?.id ?? null;
  }

  /** Returns the interaction's flow, creating it on first sight. */
  async findOrCreate(input: { interactionUid: string; tenantId: string; clientId: string; expiresAt: Date }): Promise<LoginFlow> {
    return (await this.findByInteraction(input.interactionUid)) ?? this.create(input);
  }

  /**
   * The flow once it has left `state` (a concurrent request moving it on), or as it is after about
   * two seconds. For a request that lost a race to an identical one and answers with its outcome.
   */
  async settledFrom(interactionUid: string, state: string): Promise<LoginFlow | null> {
    let flow = await this.findByInteraction(interactionUid);
    for (let i = 0; i < 100 && flow?.state === state; i++) {
      await sleep(20);
      flow = await this.findByInteraction(interactionUid);
    }
    return flow;
  }

  update(id: string, data: Partial<Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state' | 'stepUpDeclined'>>): Promise<LoginFlow> {
    return this.prisma.loginFlow.update({ where: { id }, data });
  }

  /**
   * Moves the flow from one state to another only if it is still in the first one, so two
   * concurrent submissions can't both advance it.
   */
  async transition(
    id: string,
    from: string,
    data: Partial<Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state'>>,
    /** A one-time code the move depends on: consumed in the same statement, and no move if it was used meanwhile. */
    consumeCodeId?: string,
  ): Promise<boolean> {
    const columns: Record<keyof typeof data, string> = {
      accountId: 'account_id',
      submittedUserId: 'submitted_user_id',
      method: 'method',
      completedFactors: 'completed_factors',
      state: 'state',
    };
    const sets: string[] = [];
    const params: unknown[] = [id, from];
    for (const [key, column] of Object.entries(columns) as Array<[keyof typeof data, string]>) {
      if (data[key] === undefined) continue;
      params.push(data[key]);
      sets.push(`${column} = $${params.length}${key === 'accountId' ? '::uuid' : ''}`);
    }
    if (consumeCodeId) {
      params.push(consumeCodeId);
      const rows = await this.sql.query<{ id: string }>(
        `WITH code AS (${CONSUME_CODE(`$${params.length}`)})
         UPDATE login_flows SET ${sets.join(', ')}, updated_at = now() WHERE id = $1::uuid AND state = $2 AND EXISTS (SELECT 1 FROM code) RETURNING id`,
        params,
      );
      return rows.length === 1;
    }
    const rows = await this.sql.query<{ id: string }>(`UPDATE login_flows SET ${sets.join(', ')}, updated_at = now() WHERE id = $1::uuid AND state = $2 RETURNING id`, params);
    return rows.length === 1;
  }

  /**
   * The last factor passed: in one statement, moves the flow from `from` to complete (only if it is
   * still there: a double submission loses), resets the account's failure counter and stamps its
   * last login (only while it is not locked: a lock that landed first wins), and records the login
   * event (`success`, or `locked` when the lock won). Returns null when the flow had moved on
   * already (nothing else happened), otherwise whether the login succeeded, the previous login's
   * time and whether the account ever succeeded from this IP before.
   */
  async complete(input: {
    flowId: string;
    from: string;
    completedFactors: string[];
    accountId: string;
    locale: string | null;
    /** A one-time code the completion depends on: consumed in the same statement, and no completion if it was used meanwhile. */
    consumeCodeId?: string;
    event: { tenantId: string; submittedUserId: string | null; clientId: string; method: string | null; sourceIp: string | null; userAgent: string | null };
  }): Promise<{
    succeeded: boolean;
    previousLoginAt: Date | null;
    previousLoginIp: string | null;
    seenIp: boolean;
    /** When the lock that won lifts (null: it succeeded, or the lock is permanent). */
    lockedUntil: Date | null;
    /** The account's columns the completion changed, as they are now (when it succeeded). */
    account: { locale: string | null; lastLoginAt: Date | null; updatedAt: Date } | null;
  } | null> {
    const e = input.event;
    const [row] = await this.sql.query<{ moved: boolean; succeeded: boolean; prev_at: Date | null; prev_ip: string | null; locked_until: Date | null; seen: boolean; locale: string | null; last_login_at: Date | null; updated_at: Date | null }>(
      `WITH code AS (${input.consumeCodeId ? CONSUME_CODE('$13') : 'SELECT 1'}), moved AS (
         UPDATE login_flows SET completed_factors = $3, state = 'complete', updated_at = now()
          WHERE id = $1::uuid AND state = $2 AND EXISTS (SELECT 1 FROM code) RETURNING id
       ), prev AS (
         SELECT id, last_login_at, last_login_ip, locked_until FROM accounts WHERE id = $4::uuid AND EXISTS (SELECT 1 FROM moved) FOR UPDATE
       ), done AS (
         UPDATE accounts a SET failed_attempts = 0, locked_at = NULL, locked_until = NULL, last_login_at = now(), last_login_ip = $6, locale = COALESCE($5, a.locale), updated_at = now()
           FROM prev WHERE a.id = prev.id AND NOT ${LOCK_IN_FORCE}
         RETURNING prev.last_login_at AS prev_at, prev.last_login_ip AS prev_ip, a.locale, a.last_login_at, a.updated_at
       ), event AS (
         INSERT INTO login_events (id, tenant_id, account_id, submitted_user_id, client_id, method, result, source_ip, user_agent)
         SELECT $7::uuid, $8, $4::uuid, $9, $10, $11, CASE WHEN EXISTS (SELECT 1 FROM done) THEN 'success' ELSE 'locked' END, $6, $12
          WHERE EXISTS (SELECT 1 FROM moved)
       )
       SELECT EXISTS (SELECT 1 FROM moved) AS moved, EXISTS (SELECT 1 FROM done) AS succeeded,
              (SELECT prev_at FROM done) AS prev_at, (SELECT prev_ip FROM done) AS prev_ip,
              (SELECT locked_until FROM prev) AS locked_until, (SELECT locale FROM done) AS locale, (SELECT last_login_at FROM done) AS last_login_at, (SELECT updated_at FROM done) AS updated_at,
              $6::text IS NULL OR EXISTS (SELECT 1 FROM login_events WHERE account_id = $4::uuid AND source_ip = $6 AND result = 'success') AS seen`,
      [
        input.flowId,
        input.from,
        input.completedFactors,
        input.accountId,
        input.locale,
        e.sourceIp,
        randomUUID(),
        e.tenantId,
        e.submittedUserId,
        e.clientId,
        e.method,
        e.userAgent?.slice(0, 512) ?? null,
        ...(input.consumeCodeId ? [input.consumeCodeId] : []),
      ],
    );
    if (!row?.moved) return null;
    return {
      succeeded: row.succeeded,
      previousLoginAt: row.prev_at,
      previousLoginIp: row.prev_ip,
      seenIp: row.seen,
      lockedUntil: row.succeeded ? null : asDate(row.locked_until),
      account: row.succeeded && row.updated_at ? { locale: row.locale, lastLoginAt: row.last_login_at, updatedAt: row.updated_at } : null,
    };
  }

  async deleteExpired(now = new Date()): Promise<number> {
    const r = await this.prisma.loginFlow.deleteMany({ where: { expiresAt: { lt: now } } });
    return r.count;
  }

  /**
   * Deletes login and recovery flows that expired before `before`, in batches (housekeeping). Their
   * codes go with them (ON DELETE CASCADE, by the flow_id index); each batch counts them first, in
   * the same statement.
   */
  async purgeExpired(before: Date, opts: PurgeOptions): Promise<{ flows: number; codes: number }> {
    let codes = 0;
    const flows = await purgeInBatches<{ n: number; codes: number }>(
      this.sql,
      `WITH d AS (DELETE FROM login_flows WHERE ctid IN (SELECT ctid FROM login_flows WHERE expires_at < $2 LIMIT $1) RETURNING id)
       SELECT (SELECT count(*) FROM d)::int AS n, (SELECT count(*) FROM one_time_passwords o JOIN d ON o.flow_id = d.id)::int AS codes`,
      [before],
      opts,
      (row) => (codes += Number(row.codes)),
    );
    return { flows, codes };
  }
}
