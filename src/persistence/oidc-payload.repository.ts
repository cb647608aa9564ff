import { AsyncLocalStorage } from 'node:async_hooks';
import type { PrismaClient } from './generated/client.js';
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

/** Rows a request has already read with other data, by `type:id` (null: known not to exist). */
type Prefetched = Map<string, Row | null>;

/**
 * Storage behind oidc-provider's adapter interface, shared by every instance on the same database.
 * Raw SQL on purpose: these run many times per login, and Prisma's query compiler costs more CPU
 * than the statements themselves (measured with the benchmark's profile).
 */
export class OidcPayloadRepository {
  private readonly sql: Sql;
  private readonly prefetched = new AsyncLocalStorage<Prefetched>();

  constructor(prisma: PrismaClient, sql?: Sql) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  /**
   * Runs `fn` with `rows` already known: a find of one of them inside `fn` (and what it awaits) is
   * answered from memory instead of another statement. For a request that loaded the interaction
   * together with its own data (see LoginContextRepository).
   */
  withPrefetched<T>(type: string, rows: Record<string, Row | null>, fn: () => Promise<T>): Promise<T> {
    const map: Prefetched = new Map(this.prefetched.getStore());
    for (const [id, row] of Object.entries(rows)) map.set(`${type}:${id}`, row);
    return this.prefetched.run(map, fn);
  }

  async upsert(type: string, id: string, payload: OidcPayloadData, expiresInSeconds: number | undefined): Promise<void> {
    const expiresAt = expiresInSeconds ? new Date(Date.now() + expiresInSeconds * 1000) : null;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    // A prefetched copy would now be stale.
    this.prefetched.getStore()?.delete(`${type}:${id}`);
    await this.sql.query(
      `INSERT INTO oidc_payloads (id, type, payload, grant_id, user_code, uid, expires_at)
       VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)
       ON CONFLICT (id, type) DO UPDATE
         SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
             uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`,
      [id, type, JSON.stringify(payload), str(payload.grantId), str(payload.userCode), str(payload.uid), expiresAt],
    );
  }

  private present(rows: Row[]): OidcPayloadData | undefined {
    const row = rows[0];
    if (!row) return undefined;
    if (row.expires_at && new Date(row.expires_at).getTime() <= Date.now()) return undefined;
    const payload = typeof row.payload === 'string' ? (JSON.parse(row.payload) as OidcPayloadData) : row.payload;
    return row.consumed_at ? { ...payload, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : payload;
  }

  async find(type: string, id: string) {
    const known = this.prefetched.getStore()?.get(`${type}:${id}`);
    if (known !== undefined) return this.present(known ? [known] : []);
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE id = $1 AND type = $2', [id, type]));
  }
  async findByUid(type: string, uid: string) {
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE uid = $1 AND type = $2 LIMIT 1', [uid, type]));
  }
  async findByUserCode(type: string, userCode: string) {
    return this.present(await this.sql.query<Row>('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE user_code = $1 AND type = $2 LIMIT 1', [userCode, type]));
  }

  async consume(type: string, id: string): Promise<void> {
    this.prefetched.getStore()?.delete(`${type}:${id}`);
    await this.sql.query('UPDATE oidc_payloads SET consumed_at = now() WHERE id = $1 AND type = $2', [id, type]);
  }
  async destroy(type: string, id: string): Promise<void> {
    this.prefetched.getStore()?.delete(`${type}:${id}`);
    await this.sql.query('DELETE FROM oidc_payloads WHERE id = $1 AND type = $2', [id, type]);
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    this.prefetched.getStore()?.clear();
    await this.sql.query('DELETE FROM oidc_payloads WHERE grant_id = $1', [grantId]);
  }
  /** Purges rows past their expiry (a periodic job keeps the table small; expired rows are already ignored). */
  async deleteExpired(now = new Date()): Promise<number> {
    const [row] = await this.sql.query<{ n: number }>('WITH d AS (DELETE FROM oidc_payloads WHERE expires_at < $1 RETURNING 1) SELECT count(*)::int AS n FROM d', [now]);
    return row?.n ?? 0;
  }

  /** deleteExpired in batches (housekeeping): rows of any model whose expiry is before `before`. */
  purgeExpired(before: Date, opts: PurgeOptions): Promise<number> {
    return purgeInBatches(this.sql, batchDelete('oidc_payloads', 'SELECT ctid FROM oidc_payloads WHERE expires_at < $2 LIMIT $1'), [before], opts);
  }
}
