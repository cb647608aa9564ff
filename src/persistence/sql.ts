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
