// oidc-provider's writes within one of its requests are held back and sent together at the end
// (OidcPayloadRepository.withDeferredWrites): the table must end up exactly as if each write had gone
// at once, every read inside the request must see the writes before it, and a failing request keeps
// what it wrote. On PostgreSQL and on the embedded PGlite.
import { jest } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import type { Database } from '../../src/persistence/database.js';
import { OidcPayloadRepository, SingleUseLost } from '../../src/persistence/oidc-payload.repository.js';
import type { Sql } from '../../src/persistence/sql.js';
import { bothDatabases } from '../support/database.js';

const drivers = bothDatabases('payload_writes');

describe.each(drivers)('deferred oidc-provider writes on %s', (_name, open) => {
  let db: Database;
  let done: () => Promise<void>;
  /** Statements sent through the repository, as sent. */
  const sent: string[] = [];
  let failNext: Error | undefined;
  let repo: OidcPayloadRepository;
  beforeAll(async () => {
    ({ db, done } = await open());
    const counting: Sql = {
      query: async <Row extends object>(text: string, params?: readonly unknown[]) => {
        sent.push(text);
        if (failNext) {
          const e = failNext;
          failNext = undefined;
          throw e;
        }
        return db.sql.query<Row>(text, params);
      },
    };
    repo = new OidcPayloadRepository(db.prisma, counting);
  });
  afterAll(() => done());
  beforeEach(() => {
    sent.length = 0;
  });

  const id = () => randomUUID();
  const rowsOf = async (ids: string[]) =>
    (await db.sql.query<{ id: string; type: string; payload: Record<string, unknown>; grant_id: string | null; uid: string | null; consumed_at: Date | null }>(
      'SELECT id, type, payload, grant_id, uid, consumed_at FROM oidc_payloads WHERE id = ANY($1::text[]) ORDER BY id',
      [ids],
    ));

  it('finishing an authorization (three saves and a removal) is one statement, sent before the request returns', async () => {
    const interaction = id();
    await repo.upsert('Interaction', interaction, { uid: interaction, kind: 'Interaction' }, 600);
    const [session, grant, code] = [id(), id(), id()];
    sent.length = 0;
    const seenInside: number[] = [];
    const result = await repo.withDeferredWrites(async () => {
      await repo.destroy('Interaction', interaction);
      await repo.upsert('Session', session, { uid: `uid-${session}`, accountId: 'a1', kind: 'Session' }, 3600);
      await repo.upsert('Grant', grant, { accountId: 'a1', kind: 'Grant' }, 3600);
      await repo.upsert('AuthorizationCode', code, { grantId: grant, kind: 'AuthorizationCode' }, 60);
      seenInside.push(sent.length, (await rowsOf([interaction, session, grant, code])).length);
      return 'redirect';
    });
    expect(result).toBe('redirect');
    // Nothing reached the table while the request ran: the interaction was still there, the rest not yet.
    expect(seenInside).toEqual([0, 1]);
    expect(sent).toHaveLength(1);
    const rows = await rowsOf([interaction, session, grant, code]);
    expect(rows.map((r) => r.type).sort()).toEqual(['AuthorizationCode', 'Grant', 'Session']);
    expect(rows.find((r) => r.type === 'AuthorizationCode')).toMatchObject({ grant_id: grant, payload: { grantId: grant } });
    expect(rows.find((r) => r.type === 'Session')).toMatchObject({ uid: `uid-${session}` });
    expect(await repo.findByUid('Session', `uid-${session}`)).toMatchObject({ accountId: 'a1' });
  });

  it('a read inside the request sees the writes before it', async () => {
    const [a, b] = [id(), id()];
    await repo.withDeferredWrites(async () => {
      await repo.upsert('Session', a, { uid: `uid-${a}`, n: 1 }, 600);
      await repo.upsert('Session', a, { uid: `uid-${a}`, n: 2 }, 600);
      expect(await repo.find('Session', a)).toMatchObject({ n: 2 });
      expect(await repo.findByUid('Session', `uid-${a}`)).toMatchObject({ n: 2 });
      await repo.upsert('Grant', b, { n: 3 }, 600);
      await repo.destroy('Grant', b);
      expect(await repo.find('Grant', b)).toBeUndefined();
    });
    // Two saves of one row went as one; the save and removal of the other as its removal.
    expect((await rowsOf([a, b])).map((r) => r.payload.n)).toEqual([2]);
  });

  it('a row removed and saved again in one request loses its consumed mark, as one after the other would', async () => {
    const code = id();
    await repo.upsert('AuthorizationCode', code, { grantId: 'g1' }, 60);
    expect(await repo.consume('AuthorizationCode', code)).toEqual({ consumed: true, grantId: 'g1' });
    await repo.withDeferredWrites(async () => {
      await repo.destroy('AuthorizationCode', code);
      await repo.upsert('AuthorizationCode', code, { grantId: 'g2' }, 60);
    });
    expect(await rowsOf([code])).toEqual([expect.objectContaining({ grant_id: 'g2', consumed_at: null })]);
    expect((await repo.find('AuthorizationCode', code))?.consumed).toBeUndefined();
  });

  it('consuming and revoking inside the request first send what is held', async () => {
    const [grant, code, token] = [id(), id(), id()];
    await repo.withDeferredWrites(async () => {
      await repo.upsert('AuthorizationCode', code, { grantId: grant }, 60);
      // The code must exist for the conditional consume to find it.
      expect(await repo.consume('AuthorizationCode', code)).toEqual({ consumed: true, grantId: grant });
      await repo.upsert('AccessToken', token, { grantId: grant }, 60);
      await repo.revokeByGrantId(grant);
    });
    expect(await rowsOf([code, token])).toEqual([]);
  });

  it('a request that fails still writes what it wrote, and its error is the one reported', async () => {
    const s = id();
    await expect(
      repo.withDeferredWrites(async () => {
        await repo.upsert('Session', s, { uid: `uid-${s}` }, 600);
        throw new Error('handler failed');
      }),
    ).rejects.toThrow('handler failed');
    expect(await rowsOf([s])).toHaveLength(1);
  });

  it('when the held writes cannot be sent, the request fails instead of answering as if they had been', async () => {
    const s = id();
    const outcome = repo.withDeferredWrites(async () => {
      await repo.upsert('Session', s, { uid: `uid-${s}` }, 600);
      failNext = new Error('connection terminated');
      return 'redirect';
    });
    await expect(outcome).rejects.toThrow('connection terminated');
    expect(await rowsOf([s])).toEqual([]);
  });

  it('a token request consumes its code in the statement that stores the tokens it issued', async () => {
    const [grant, code, access, refresh] = [id(), id(), id(), id()];
    await repo.upsert('Grant', grant, { accountId: 'a1' }, 600);
    await repo.upsert('AuthorizationCode', code, { grantId: grant }, 60);
    sent.length = 0;
    await repo.withDeferredWrites(() =>
      repo.withTokenPrefetch(async () => {
        expect(await repo.find('AuthorizationCode', code)).toMatchObject({ grantId: grant });
        expect(await repo.consume('AuthorizationCode', code)).toMatchObject({ consumed: true });
        await repo.upsert('AccessToken', access, { grantId: grant }, 60);
        await repo.upsert('RefreshToken', refresh, { grantId: grant }, 600);
      }),
    );
    // The read (with its grant and session), then the consume with both tokens.
    expect(sent).toHaveLength(2);
    const rows = await rowsOf([code, access, refresh]);
    expect(rows.map((r) => r.type).sort()).toEqual(['AccessToken', 'AuthorizationCode', 'RefreshToken']);
    expect(rows.find((r) => r.type === 'AuthorizationCode')?.consumed_at).toBeInstanceOf(Date);
  });

  it('a token request that loses its code to another stores nothing, and the grant is revoked', async () => {
    const [grant, code, firstToken, secondToken] = [id(), id(), id(), id()];
    await repo.upsert('Grant', grant, { accountId: 'a1' }, 600);
    await repo.upsert('AuthorizationCode', code, { grantId: grant }, 60);
    const exchange = (token: string, between?: () => Promise<void>) =>
      repo.withDeferredWrites(() =>
        repo.withTokenPrefetch(async () => {
          // Both read the code unused.
          expect((await repo.find('AuthorizationCode', code))?.consumed).toBeUndefined();
          await between?.();
          await repo.consume('AuthorizationCode', code);
          await repo.upsert('AccessToken', token, { grantId: grant }, 60);
          return token;
        }),
      );
    // The second request reads the code, then the first runs to its end, then the second goes on.
    let hasRead!: () => void;
    let goOn!: () => void;
    const read = new Promise<void>((r) => (hasRead = r));
    const gate = new Promise<void>((r) => (goOn = r));
    const second = exchange(secondToken, () => {
      hasRead();
      return gate;
    });
    await read;
    await expect(exchange(firstToken)).resolves.toBe(firstToken);
    expect(await rowsOf([firstToken])).toHaveLength(1);
    goOn();
    await expect(second).rejects.toBeInstanceOf(SingleUseLost);
    await expect(second).rejects.toMatchObject({ model: 'AuthorizationCode' });
    // The loser's token was never stored, and the winner's went with the grant (RFC 6749 4.1.2).
    expect(await rowsOf([grant, code, firstToken, secondToken])).toEqual([]);
  });

  it('outside a token request a consume goes at once', async () => {
    const [grant, request] = [id(), id()];
    await repo.upsert('PushedAuthorizationRequest', request, { grantId: grant }, 60);
    sent.length = 0;
    await repo.withDeferredWrites(async () => {
      expect(await repo.consume('PushedAuthorizationRequest', request)).toEqual({ consumed: true, grantId: grant });
      expect(sent).toHaveLength(1);
      expect(await repo.consume('PushedAuthorizationRequest', request)).toEqual({ consumed: false, grantId: grant });
    });
  });

  it('an interaction given its result here is read from memory once, by the resume that follows', async () => {
    const [a, b, c] = [id(), id(), id()];
    const finished = (uid: string) => ({ uid, returnTo: `/auth/${uid}`, result: { login: { accountId: 'a1' } } });
    await repo.upsert('Interaction', a, finished(a), 600);
    sent.length = 0;
    expect(await repo.find('Interaction', a)).toMatchObject({ result: { login: { accountId: 'a1' } } });
    expect(sent).toHaveLength(0);
    // Once: the next read goes to the table.
    expect(await repo.find('Interaction', a)).toMatchObject({ result: { login: { accountId: 'a1' } } });
    expect(sent).toHaveLength(1);

    // Saved again without a result (another prompt), or removed: read from the table.
    await repo.upsert('Interaction', b, finished(b), 600);
    await repo.upsert('Interaction', b, { uid: b, prompt: { name: 'consent' } }, 600);
    sent.length = 0;
    expect(await repo.find('Interaction', b)).toMatchObject({ prompt: { name: 'consent' } });
    expect(sent).toHaveLength(1);
    await repo.upsert('Interaction', c, finished(c), 600);
    await repo.withDeferredWrites(() => repo.destroy('Interaction', c));
    sent.length = 0;
    expect(await repo.find('Interaction', c)).toBeUndefined();
    expect(sent).toHaveLength(1);
  });

  it('an interaction whose result could not be stored is not kept for the resume', async () => {
    const a = id();
    await repo.upsert('Interaction', a, { uid: a, prompt: { name: 'login' } }, 600);
    failNext = new Error('connection terminated');
    await expect(repo.upsert('Interaction', a, { uid: a, result: { login: { accountId: 'a1' } } }, 600)).rejects.toThrow('connection terminated');
    sent.length = 0;
    expect(await repo.find('Interaction', a)).toMatchObject({ prompt: { name: 'login' } });
    expect(sent).toHaveLength(1);
  });

  it('an interaction finished here more than 30 s ago is read from the table', async () => {
    const a = id();
    await repo.upsert('Interaction', a, { uid: a, result: { login: { accountId: 'a1' } } }, 600);
    // Changed in the table meanwhile (e.g. by another instance).
    await db.sql.query(`UPDATE oidc_payloads SET payload = payload || '{"changed": true}'::jsonb WHERE id = $1 AND type = 'Interaction'`, [a]);
    const now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockReturnValue(now + 30_001);
    try {
      sent.length = 0;
      expect(await repo.find('Interaction', a)).toMatchObject({ changed: true });
      expect(sent).toHaveLength(1);
    } finally {
      clock.mockRestore();
    }
  });

  it('outside a request every write goes at once', async () => {
    const s = id();
    await repo.upsert('Session', s, { uid: `uid-${s}` }, 600);
    expect(sent).toHaveLength(1);
    expect(await rowsOf([s])).toHaveLength(1);
    await repo.destroy('Session', s);
    expect(await rowsOf([s])).toEqual([]);
  });
});
