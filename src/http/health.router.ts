import Router from '@koa/router';
import type { Database } from '../persistence/database.js';
import { pingDatabase } from '../persistence/health.js';

/** Liveness and readiness for load balancers and orchestrators. */
export function healthRouter(deps: { db: Database }) {
  const router = new Router();
  router.get('/health', async (ctx) => {
    const ok = await pingDatabase(deps.db);
    ctx.status = ok ? 200 : 503;
    ctx.body = ok ? { status: 'ok', database: deps.db.kind } : { status: 'unavailable' };
  });
  return router;
}
