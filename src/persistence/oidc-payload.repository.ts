import { AsyncLocalStorage } from 'node:async_hooks';
import type { PrismaClient } from './generated/client.js';
import { setBounded } from '../bounded-map.js';
import { batchDelete, purgeInBatches, type PurgeOptions } from './purge.js';
import { sqlThroughPrisma, type Sql } from './sql.js';

/** A stored oidc-provider model instance (session, interaction, code, token, grant...). */
export type OidcPayloadData = Record<string, unknown>;

/** A row of oidc_payloads as read (the payload is jsonb; a driver may hand it over as text). */
export interface StoredPayloadRow {
  payload: OidcPayloadData | string;
  expires_at: Date | null;
  consumed_at: Date | null;
}
type Row = StoredPayloadRow;

/** Rows a request has already read with other data, by `type:id` or `type:uid:uid` (null: known not to exist). */
type Prefetched = Map<string, Row | null>;

/**
 * A write a request has made and not yet sent, by `type:id`: the row's new content, its removal, or
 * (a token request) its single use, on which every write held after it depends.
 */
type PendingWrite = { type: string; id: string } & ({ kind: 'upsert'; values: unknown[] } | { kind: 'destroy' } | { kind: 'consume' });

/** What one request remembers: rows it has read, and (inside withDeferredWrites) writes it has not sent. */
interface Scope {
  rows: Prefetched;
  writes?: Map<string, PendingWrite>;
  /** A token request: consuming its code (or refresh token) goes with the writes it makes after it. */
  consumeAtEnd?: boolean;
}

/**
 * A token request found, when its writes were sent, that another request had used its code (or
 * refresh token) first: nothing it wrote after consuming was stored, and the grant has been revoked
 * with everything issued from it. The request must answer invalid_grant.
 */
export class SingleUseLost extends Error {
  constructor(
    readonly model: string,
    readonly grantId: string | null,
  ) {
    super(`${model} already consumed`);
    this.name = 'SingleUseLost';
  }
}

/** The key under which a request holds its consume (apart from the row's own writes). */
const CONSUME_KEY = 'consume';

/** How long an interaction given its result here is kept for the resume that follows, and how many. */
const FINISHED_TTL_MS = 30_000;
const FINISHED_MAX = 10_000;

/** Keeps `write` as its row's latest, re-added last: writes go in the order of their latest change. */
function hold(writes: Map<string, PendingWrite>, write: PendingWrite): void {
  const key = `${write.type}:${write.id}`;
  writes.delete(key);
  writes.set(key, write);
}

const UPSERT_COLUMNS = 'id, type, payload, grant_id, user_code, uid, expires_at';
/** One row of UPSERT_COLUMNS, its parameters numbered from `n` (the types cast: the rows are selected from VALUES). */
const upsertRow = (n: number) => `($${n}, $${n + 1}, $${n + 2}::jsonb, $${n + 3}, $${n + 4}, $${n + 5}, $${n + 6}::timestamptz)`;
/**
 * Rows `v` to store, less those an account's access ended removed (oidc_revoked, written before the
 * removal): a request that read its session (or grant) before the removal saves it at its end, which
 * would bring it back (SessionRepository.deleteAllForAccount).
 */
const upsertRows = (rows: string[]) =>
  `INSERT INTO oidc_payloads (${UPSERT_COLUMNS}) SELECT * FROM (VALUES ${rows.join(', ')}) AS v (${UPSERT_COLUMNS})
   WHERE NOT EXISTS (SELECT 1 FROM oidc_revoked r WHERE r.id = v.id AND r.type = v.type)`;
const UPSERT_CONFLICT = `ON CONFLICT (id, type) DO UPDATE
         SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
             uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`;

/** Tokens whose grant and session are read along with them inside `withTokenPrefetch`. */
const TOKEN_TYPES = new Set(['AuthorizationCode', 'RefreshToken']);

/**
 * Storage behind oidc-provider's adapter interface, shared by every instance on the same database.
 * Raw SQL on purpose: these run many times per login, and Prisma's query compiler costs more CPU
 * than the statements themselves (measured with the benchmark's profile).
 */
export class OidcPayloadRepository {
  private readonly sql: Sql;
  private readonly scope = new AsyncLocalStorage<Scope>();
  /**
   * Interactions this process has just given their result (a login or consent step finished), as
   * saved, for the one read that follows: the authorization resuming, which the browser asks for next.
   */
  private readonly finished = new Map<string, { row: Row; until: number }>();

  constructor(prisma: PrismaClient, sql?: Sql) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  /**
   * Runs `fn` with `rows` already known: a find of one of them inside `fn` (and what it awaits) is
   * answered from memory instead of another statement. For a request that loaded the interaction
   * together with its own data (see LoginContextRepository).
   */
  withPrefetched<T>(type: string, rows: Record<string, Row | null>, fn: () => Promise<T>): Promise<T> {
    const outer = this.scope.getStore();
    const map: Prefetched = new Map(outer?.rows);
    for (const [id, row] of Object.entries(rows)) map.set(`${type}:${id}`, row);
    return this.scope.run({ ...outer, rows: map }, fn);
  }

  /**
   * Runs `fn` (a token request) in a scope where reading an authorization code or a refresh token also
   * reads, in the same statement, the grant it belongs to and the session it was issued in: the two
   * rows oidc-provider reads next (its session-binding check and the grant's validation).
   */
  withTokenPrefetch<T>(fn: () => Promise<T>): Promise<T> {
    const outer = this.scope.getStore();
    return this.scope.run({ ...outer, rows: new Map(outer?.rows), consumeAtEnd: true }, fn);
  }

  /**
   * Runs `fn` (one of oidc-provider's requests) holding back its saves and removals of rows until it
   * has finished, then sends them in one statement, before the response leaves: finishing an
   * authorization saves the session, the grant and the code and removes the interaction (four
   * statements otherwise), a code exchange saves two tokens. Anything else the request does with the
   * table (a read, consuming a code, revoking a grant) first sends what is held, so it sees the table
   * as if every write had gone at once. If `fn` fails, what it wrote is still sent, as it would have been.
   * In a token request (`withTokenPrefetch`) the code's consume is held too, and the tokens are stored
   * only if it takes: a request that lost the code to another fails with SingleUseLost.
   */
  async withDeferredWrites<T>(fn: () => Promise<T>): Promise<T> {
    const outer = this.scope.getStore();
    if (outer?.writes) return fn();
    const scope: Scope = { rows: new Map(outer?.rows), writes: new Map() };
    let result: T;
    try {
      result = await this.scope.run(scope, fn);
    } catch (error) {
      await this.flush(scope).catch(() => undefined);
      throw error;
    }
    await this.flush(scope);
    return result;
  }

  async upsert(type: string, id: string, payload: OidcPayloadData, expiresInSeconds: number | undefined): Promise<void> {
    const expiresAt = expiresInSeconds ? new Date(Date.now() + expiresInSeconds * 1000) : null;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    const values = [id, type, JSON.stringify(payload), str(payload.grantId), str(payload.userCode), str(payload.uid), expiresAt];
    // A prefetched copy would now be stale.
    this.forget(type, id);
    if (type === 'Interaction') this.finished.delete(id);
    const scope = this.scope.getStore();
    if (scope?.writes) {
      const key = `${type}:${id}`;
      // Removed and saved again: the removal goes first (it also clears the row's consumed mark).
      if (scope.writes.get(key)?.kind === 'destroy') await this.flush(scope);
      hold(scope.writes, { kind: 'upsert', type, id, values });
    } else {
      await this.sql.query(`${upsertRows([upsertRow(1)])} ${UPSERT_CONFLICT}`, values);
    }
    // Kept for the resume only once stored (or held: a request whose held writes fail, fails).
    if (type === 'Interaction' && payload.result !== undefined)
      setBounded(this.finished, id, { row: { payload: values[2] as string, expires_at: expiresAt, consumed_at: null }, until: Date.now() + FINISHED_TTL_MS }, FINISHED_MAX);
  }

  /** Sends the writes `scope` holds (none: no statement), as one statement. */
  private async flush(scope: Scope | undefined = this.scope.getStore()): Promise<void> {
    const writes = scope?.writes;
    if (!writes?.size) return;
    const consume = writes.get(CONSUME_KEY);
    writes.delete(CONSUME_KEY);
    const pending = [...writes.values()];
    writes.clear();
    const params: unknown[] = consume ? [consume.id, consume.type] : [];
    const removals = pending.flatMap((w) => (w.kind === 'destroy' ? [`($${params.push(w.id)}, $${params.push(w.type)})`] : []));
    const rows = pending.flatMap((w) => {
      if (w.kind !== 'upsert') return [];
      return [upsertRow(params.push(...w.values) - 6)];
    });
    if (!consume) {
      const remove = removals.length ? `DELETE FROM oidc_payloads WHERE (id, type) IN (${removals.join(', ')})` : '';
      const insert = rows.length ? `${upsertRows(rows)} ${UPSERT_CONFLICT}` : '';
      // A key is in one of the two parts only, so they never touch the same row.
      await this.sql.query(remove && insert ? `WITH removed AS (${remove}) ${insert}` : remove || insert, params);
      return;
    }
    // The consume first; what the request wrote after it is stored only if it took.
    const dependent: string[] = [];
    if (removals.length) dependent.push(`removed AS (DELETE FROM oidc_payloads WHERE (id, type) IN (${removals.join(', ')}) AND EXISTS (SELECT 1 FROM c))`);
    if (rows.length)
      dependent.push(
        `stored AS (${upsertRows(rows)} AND EXISTS (SELECT 1 FROM c) ${UPSERT_CONFLICT})`,
      );
    const { consumed, grantId } = await this.consumeWith(params, dependent);
    if (consumed) return;
    // As oidc-provider does with a code used twice (RFC 6749 4.1.2): the winner's tokens go too.
    if (grantId) await this.revokeGrant(grantId);
    throw new SingleUseLost(consume.type, grantId);
  }

  /**
   * Marks the row `params[0]`, `params[1]` (id, type) used, once, as CTE `c`, with `dependent` CTEs
   * (which test `EXISTS (SELECT 1 FROM c)`) in the same statement. Of two requests consuming one
   * row, the second waits for the first's row lock and then finds it used. `grantId`: the row's grant.
   */
  private async consumeWith(params: unknown[], dependent: string[]): Promise<{ consumed: boolean; grantId: string | null }> {
    const [row] = await this.sql.query<{ consumed: boolean; grant_id: string | null }>(
      `WITH ${[`c AS (UPDATE oidc_payloads SET consumed_at = now() WHERE id = $1 AND type = $2 AND consumed_at IS NULL RETURNING 1)`, ...dependent].join(', ')}
       SELECT EXISTS (SELECT 1 FROM c) AS consumed, (SELECT grant_id FROM oidc_payloads WHERE id = $1 AND type = $2) AS grant_id`,
      params,
    );
    return { consumed: row?.consumed === true, grantId: row?.grant_id ?? null };
  }

  private present(rows: Row[]): OidcPayloadData | undefined {
    const row = rows[0];
    if (!row) return undefined;
    if (row.expires_at && new Date(row.expires_at).getTime() <= Date.now()) return undefined;
    const payload = typeof row.payload === 'string' ? (JSON.parse(row.payload) as OidcPayloadData) : row.payload;
    return row.consumed_at ? { ...payload, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : payload;
  }

  async find(type: string, id: string) {
    const scope = this.scope.getStore();
    const store = scope?.rows;
    const known = store?.get(`${type}:${id}`);
    if (known !== undefined) return this.present(known ? [known] : []);
    if (type === 'Interaction') {
      const finished = this.finished.get(id);
      this.finished.delete(id);
      // Once, and soon: this process saved it last (any later save or removal here updates the entry).
      if (finished && finished.until > Date.now()) return this.present([finished.row]);
    }
    await this.flush(scope);
    if (store && TOKEN_TYPES.has(type)) return this.present(await this.findWithGrantAndSession(store, type, id));
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE id = $1 AND type = $2', [id, type]));
  }
  async findByUid(type: string, uid: string) {
    const known = this.scope.getStore()?.rows.get(`${type}:uid:${uid}`);
    if (known !== undefined) return this.present(known ? [known] : []);
    await this.flush();
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE uid = $1 AND type = $2 LIMIT 1', [uid, type]));
  }

  /**
   * The token row with its grant (by id) and its session (by uid): one statement instead of three. All
   * three are remembered in `store`, rows that do not exist as such.
   */
  private async findWithGrantAndSession(store: Prefetched, type: string, id: string): Promise<Row[]> {
    const rows = await this.sql.query<Row & { kind: string; key: string | null }>(
      `WITH t AS (SELECT payload, expires_at, consumed_at, grant_id, payload->>'sessionUid' AS session_uid
                    FROM oidc_payloads WHERE id = $1 AND type = $2)
       SELECT 'token' AS kind, NULL AS key, payload, expires_at, consumed_at FROM t
       UNION ALL
       SELECT 'grant', t.grant_id, g.payload, g.expires_at, g.consumed_at
         FROM t LEFT JOIN oidc_payloads g ON g.id = t.grant_id AND g.type = 'Grant' WHERE t.grant_id IS NOT NULL
       UNION ALL
       SELECT 'session', t.session_uid, s.payload, s.expires_at, s.consumed_at
         FROM t LEFT JOIN LATERAL (SELECT payload, expires_at, consumed_at FROM oidc_payloads
                                    WHERE uid = t.session_uid AND type = 'Session' LIMIT 1) s ON true
        WHERE t.session_uid IS NOT NULL`,
      [id, type],
    );
    // A missing token row is remembered too; grant and session rows are named by their key (the
    // statement returns them only when the token names one), with a null payload when they are gone.
    store.set(`${type}:${id}`, null);
    for (const { kind, key, payload, expires_at, consumed_at } of rows) {
      const name = kind === 'token' ? `${type}:${id}` : kind === 'grant' ? `Grant:${key}` : `Session:uid:${key}`;
      store.set(name, payload === null ? null : { payload, expires_at, consumed_at });
    }
    const token = store.get(`${type}:${id}`);
    return token ? [token] : [];
  }

  /** Drops what a change to this row makes stale from the request's prefetched rows. */
  private forget(type: string, id: string): void {
    const store = this.scope.getStore()?.rows;
    if (!store) return;
    store.delete(`${type}:${id}`);
    // A session is also known by its uid, which a change by id does not name.
    if (type === 'Session') for (const key of [...store.keys()]) if (key.startsWith('Session:uid:')) store.delete(key);
  }
  async findByUserCode(type: string, userCode: string) {
    await this.flush();
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE user_code = $1 AND type = $2 LIMIT 1', [userCode, type]));
  }

  /**
   * Marks a single-use row (a code, a rotated refresh token) used, once: of two requests consuming it at
   * the same moment only one gets `consumed: true` (the row lock orders them, and the second sees the
   * first's mark). `grantId` is the row's grant, for revoking it when the caller lost. In a token
   * request the consume is held and sent with the tokens (see flush), and `consumed: true` is provisional.
   */
  async consume(type: string, id: string): Promise<{ consumed: boolean; grantId: string | null }> {
    this.forget(type, id);
    const scope = this.scope.getStore();
    await this.flush(scope);
    if (scope?.writes && scope.consumeAtEnd) {
      // Sent with the writes that follow (the tokens it gives), which depend on it; see flush.
      scope.writes.set(CONSUME_KEY, { kind: 'consume', type, id });
      return { consumed: true, grantId: null };
    }
    return this.consumeWith([id, type], []);
  }

  /** Removes a grant and everything issued from it (codes, tokens). */
  async revokeGrant(grantId: string): Promise<void> {
    this.scope.getStore()?.rows.clear();
    await this.flush();
    await this.sql.query("DELETE FROM oidc_payloads WHERE grant_id = $1 OR (type = 'Grant' AND id = $1)", [grantId]);
  }
  async destroy(type: string, id: string): Promise<void> {
    this.forget(type, id);
    if (type === 'Interaction') this.finished.delete(id);
    const scope = this.scope.getStore();
    if (scope?.writes) {
      hold(scope.writes, { kind: 'destroy', type, id });
      return;
    }
    await this.sql.query('DELETE FROM oidc_payloads WHERE id = $1 AND type = $2', [id, type]);
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    this.scope.getStore()?.rows.clear();
    await this.flush();
    await this.sql.query('DELETE FROM oidc_payloads WHERE grant_id = $1', [grantId]);
  }
  /** Purges rows past their expiry (a periodic job keeps the table small; expired rows are already ignored). */
  async deleteExpired(now = new Date()): Promise<number> {
    const [row] = await this.sql.query<{ n: number }>('WITH d AS (DELETE FROM oidc_payloads WHERE expires_at < $1 RETURNING 1) SELECT count(*)::int AS n FROM d', [now]);
    return row?.n ?? 0;
  }

  /**
   * Housekeeping: rows of any model whose expiry is before `before`, in batches; then the marks of removed sessions and grants (oidc_revoked) past
   * their hour, in one statement: there are only as many as sessions ended in about an hour.
   */
  async purgeExpired(before: Date, opts: PurgeOptions): Promise<number> {
    const payloads = await purgeInBatches(this.sql, batchDelete('oidc_payloads', 'SELECT ctid FROM oidc_payloads WHERE expires_at < $2 LIMIT $1'), [before], opts);
    if (opts.shouldStop?.()) return payloads;
    const [marks] = await this.sql.query<{ n: number }>('WITH d AS (DELETE FROM oidc_revoked WHERE expires_at < $1 RETURNING 1) SELECT count(*)::int AS n FROM d', [before]);
    return payloads + (marks?.n ?? 0);
  }
}
