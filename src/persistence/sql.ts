import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { PrismaClient } from './generated/client.js';

/**
 * Typed raw SQL for the few statements on the login path that run several times per login. Prisma's
 * client runtime costs more CPU than such statements themselves, so these go straight to the driver
 * (the pg pool Prisma also uses, or PGlite); Prisma stays the schema, the migrations and the rest of
 * the data access. Rows come back as the driver parses them: timestamptz as Date, jsonb as objects,
 * text[] as arrays.
 */
export interface Sql {
  query<Row extends object>(text: string, params?: readonly unknown[]): Promise<Row[]>;
}

/** The same statements through Prisma, for repositories built on a bare PrismaClient (scripts, tests). */
export function sqlThroughPrisma(prisma: PrismaClient): Sql {
  return {
    query: <Row extends object>(text: string, params: readonly unknown[] = []) => prisma.$queryRawUnsafe<Row[]>(text, ...params),
  };
}

/**
 * A timestamp as the driver gave it: a Date from a column, an ISO string from inside a JSON value
 * (rows loaded on the side with row_to_json).
 */
export function asDate(v: Date | string): Date;
export function asDate(v: Date | string | null): Date | null;
export function asDate(v: Date | string | null): Date | null {
  return v === null ? null : v instanceof Date ? v : new Date(v);
}

/** Distinct statement texts given a name of their own; texts beyond these run unnamed. */
const MAX_PREPARED = 500;

/**
 * Raw SQL on the pool as named prepared statements: each connection parses a statement once and
 * PostgreSQL keeps its plan, instead of parsing and planning it for every call (in the bench this
 * halved PostgreSQL's CPU per login). A statement's name is a hash of its text.
 */
export function preparedSql(pool: Pick<pg.Pool, 'query'>, maxPrepared = MAX_PREPARED): Sql {
  const names = new Map<string, string>();
  const hashOf = (text: string) => createHash('sha1').update(text).digest('base64url').slice(0, 20);
  return {
    async query<Row extends object>(text: string, params: readonly unknown[] = []) {
      const values = [...params];
      let name = names.get(text);
      if (name === undefined) {
        if (names.size >= maxPrepared) return (await pool.query<Row>(text, values)).rows;
        name = `anshin_${hashOf(text)}`;
        names.set(text, name);
      }
      try {
        return (await pool.query<Row>({ name, text, values })).rows;
      } catch (error) {
        // "cached plan must not change result type": a migration (another instance's, during a
        // rolling deploy) changed a table under a statement that connections had prepared. Those
        // connections keep the stale statement, so the text takes a new name, prepared afresh.
        if ((error as { code?: string }).code !== '0A000') throw error;
        const renamed = `anshin_${hashOf(`${name}\n${text}`)}`;
        names.set(text, renamed);
        return (await pool.query<Row>({ name: renamed, text, values })).rows;
      }
    },
  };
}
