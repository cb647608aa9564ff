// Deletes of old rows in small batches, so a large backlog never becomes one long statement holding
// many row locks, a burst of WAL and a long pause of the table's autovacuum.
import type { Sql } from './sql.js';

export interface PurgeOptions {
  /** Rows per statement. */
  batchSize: number;
  /** Pause between two batches, so other work on the table gets its turn. */
  pauseMs: number;
  /** How to wait between batches (tests replace it to hold a run open). */
  pause?: (ms: number) => Promise<void>;
  /** Asked before each further batch; true stops the purge (shutdown). */
  shouldStop?: () => boolean;
  /** Told the number of rows each batch deleted. */
  onBatch?: (deleted: number) => void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs a `DELETE … WHERE ctid IN (SELECT ctid … LIMIT $1)` statement until a batch deletes fewer rows
 * than the batch size. The statement must take the batch size as `$1`, its own parameters from `$2`,
 * and answer one row `{ n }` with the number of rows it deleted (`WITH d AS (DELETE … RETURNING 1)
 * SELECT count(*)::int AS n FROM d`), and any other figures the caller wants from each batch
 * (`onRow`). Returns the total of `n`.
 */
export async function purgeInBatches<Row extends { n: number }>(
  sql: Sql,
  statement: string,
  params: readonly unknown[],
  opts: PurgeOptions,
  onRow?: (row: Row) => void,
): Promise<number> {
  const batchSize = Math.max(1, Math.floor(opts.batchSize));
  const pause = opts.pause ?? sleep;
  let total = 0;
  for (;;) {
    const [row] = await sql.query<Row>(statement, [batchSize, ...params]);
    const n = Number(row?.n ?? 0);
    total += n;
    if (row) onRow?.(row);
    opts.onBatch?.(n);
    if (n < batchSize || opts.shouldStop?.()) return total;
    await pause(opts.pauseMs);
    if (opts.shouldStop?.()) return total;
  }
}

/** `DELETE FROM <table> WHERE ctid IN (<select of ctids, LIMIT $1>)`, counting what it deleted. */
export function batchDelete(table: string, selectCtids: string): string {
  return `WITH d AS (DELETE FROM ${table} WHERE ctid IN (${selectCtids}) RETURNING 1) SELECT count(*)::int AS n FROM d`;
}
