import { openDatabase, MEMORY_DATA_DIR } from '../dist/persistence/database.js';
import { AccountRepository } from '../dist/persistence/account.repository.js';
const db = await openDatabase({ databaseUrl: 'postgresql://postgres@127.0.0.1:5432/manual', dataDir: MEMORY_DATA_DIR });
const accounts = new AccountRepository(db.prisma);
for (let i = 0; i < 5; i++) { try { await accounts.create({ tenantId: 'manual', userId: `u${i}`, devices: [{ email: `u${i}@example.test` }] }); } catch (e) { console.log(e.message.slice(0, 80)); } }
await db.close(); console.log('ok');
