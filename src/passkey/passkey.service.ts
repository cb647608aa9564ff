import { createHmac } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  AuthenticatorTransport,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { z } from 'zod';
import { BadRequestError } from '../http/errors.js';
import type { ChallengePurpose, Passkey, PasskeyRepository } from '../persistence/passkey.repository.js';

/** The relying party every passkey is scoped to: this provider's issuer. */
export interface PasskeyRelyingParty {
  /** The issuer's host name (WebAuthn's RP ID; an IP address is not accepted by browsers). */
  rpId: string;
  /** Shown by the authenticator when a passkey is made. */
  rpName: string;
  /** The issuer's origin: where ceremonies must take place. */
  origin: string;
}

export function relyingPartyOf(issuer: string, rpName: string): PasskeyRelyingParty {
  const url = new URL(issuer);
  return { rpId: url.hostname, rpName, origin: url.origin };
}

/** Longest name a user may give a passkey. */
export const PASSKEY_NAME_MAX = 64;

const base64url = z.string().min(1).max(16_384).regex(/^[A-Za-z0-9_-]+={0,2}$/);
/** The browser's answer is untrusted input: bounded, shaped, before the library sees it. */
const registrationSchema = z.object({
  id: base64url,
  rawId: base64url,
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: base64url, attestationObject: base64url, transports: z.array(z.string().max(32)).max(10).optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.string().max(32).optional(),
});
const assertionSchema = z.object({
  id: base64url,
  rawId: base64url,
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: base64url, authenticatorData: base64url, signature: base64url, userHandle: base64url.optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.string().max(32).optional(),
});

/** Parses the JSON a passkey form posts (a string field or an object); a 400 in the user's language otherwise. */
function parse<T>(schema: z.ZodType<T>, raw: unknown, backUrl?: string): T {
  let value = raw;
  if (typeof raw === 'string') {
    if (raw.length > 65_536) throw new BadRequestError('passkey:errors.invalid_response', {}, backUrl);
    try {
      value = JSON.parse(raw);
    } catch {
      throw new BadRequestError('passkey:errors.invalid_response', {}, backUrl);
    }
  }
  const r = schema.safeParse(value);
  if (!r.success) throw new BadRequestError('passkey:errors.invalid_response', {}, backUrl);
  return r.data;
}

export type AssertionResult =
  | { ok: true; passkey: Passkey; accountId: string; amr: string[] }
  | {
      ok: false;
      /**
       * - `challenge`: unknown, used or expired challenge (a replay, or a page left open too long);
       * - `unknown_credential`: no such passkey (deleted, or never registered here);
       * - `other_account`: a passkey of another account, or of another tenant;
       * - `counter_regression`: the signature counter went back (a cloned authenticator);
       * - `invalid`: the signature or the client data did not verify.
       */
      reason: 'challenge' | 'unknown_credential' | 'other_account' | 'counter_regression' | 'invalid';
      /** The passkey the assertion named, when it exists (its account's failure counter may move). */
      accountId?: string;
    };

/**
 * RFC 8176 `amr` of a passkey assertion: `hwk` for a device-bound credential (the key never leaves
 * the authenticator), `swk` for a synced one (multi-device: the key is kept in software by the
 * platform's sync), and `user` since user verification is always required.
 */
export function passkeyAmr(deviceType: string, userVerified: boolean): string[] {
  return [deviceType === 'multiDevice' ? 'swk' : 'hwk', ...(userVerified ? ['user'] : [])];
}

/** Every amr a passkey can contribute (to recognise a session that already proved one). */
export const PASSKEY_AMR_VALUES = ['hwk', 'swk'];

const CHALLENGE_TTL_SECONDS = 300;

/**
 * @simplewebauthn/server, loaded on the first ceremony: it brings the X.509 and ASN.1 libraries with
 * it, which a provider whose contracts use neither passkeys nor certificates never needs.
 */
let library: Promise<typeof import('@simplewebauthn/server')> | undefined;
const webauthn = () => (library ??= import('@simplewebauthn/server'));

/**
 * Passkeys (WebAuthn, through @simplewebauthn/server): registration and assertion ceremonies with
 * single-use challenges stored in the database (any instance can finish what another began), user
 * verification required, and the signature counter checked and moved with compare-and-set.
 */
export class PasskeyService {
  constructor(
    private readonly deps: {
      passkeys: PasskeyRepository;
      rp: PasskeyRelyingParty;
      /** Server secret for the stand-in credential IDs shown for user IDs without passkeys. */
      decoyKey: string;
      challengeTtlSeconds?: number;
    },
  ) {}

  get rp(): PasskeyRelyingParty {
    return this.deps.rp;
  }

  list(accountId: string): Promise<Passkey[]> {
    return this.deps.passkeys.listForAccount(accountId);
  }

  async hasPasskey(accountId: string): Promise<boolean> {
    return (await this.deps.passkeys.countForAccount(accountId)) > 0;
  }

  async rename(accountId: string, id: string, name: string): Promise<boolean> {
    return this.deps.passkeys.rename(accountId, id, validName(name));
  }

  delete(accountId: string, id: string): Promise<Passkey | null> {
    return this.deps.passkeys.delete(accountId, id);
  }

  /** Like `delete`, but keeps the last passkey when the account's login method is one of `keepOneFor` (`'last'`). */
  deleteUnlessLast(accountId: string, id: string, keepOneFor: readonly string[]): Promise<Passkey | 'last' | null> {
    return this.deps.passkeys.deleteUnlessLast(accountId, id, keepOneFor);
  }

  private async challenge(purpose: ChallengePurpose, binding: string, accountId: string | null, challenge: string): Promise<void> {
    const ttl = this.deps.challengeTtlSeconds ?? CHALLENGE_TTL_SECONDS;
    await this.deps.passkeys.issueChallenge({ challenge, purpose, binding, accountId, expiresAt: new Date(Date.now() + ttl * 1000) });
  }

  /**
   * Options for `navigator.credentials.create()` for an account. `binding`: what the ceremony
   * belongs to (an account-area session, an activation); only the same binding can finish it.
   */
  async registrationOptions(account: { id: string; userId: string }, binding: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const existing = await this.deps.passkeys.listForAccount(account.id);
    const options = await (await webauthn()).generateRegistrationOptions({
      rpName: this.deps.rp.rpName,
      rpID: this.deps.rp.rpId,
      userName: account.userId,
      userDisplayName: account.userId,
      // The user handle is the account's UUID: no personal data, and a discoverable credential names its account.
      userID: uuidBytes(account.id),
      attestationType: 'none',
      excludeCredentials: existing.map((p) => ({ id: p.credentialId, transports: p.transports as AuthenticatorTransport[] })),
      authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
      timeout: (this.deps.challengeTtlSeconds ?? CHALLENGE_TTL_SECONDS) * 1000,
    });
    await this.challenge('register', binding, account.id, options.challenge);
    return options;
  }

  /** Verifies a registration and stores the passkey. BadRequestError (user's language) when it fails. */
  async register(account: { id: string }, binding: string, raw: unknown, details: { name: string; deviceId: string | null }, backUrl?: string): Promise<Passkey> {
    const response = parse(registrationSchema, raw, backUrl) as RegistrationResponseJSON;
    const name = validName(details.name, backUrl);
    let challengeAccount: string | null | undefined;
    let verification;
    try {
      verification = await (await webauthn()).verifyRegistrationResponse({
        response,
        expectedChallenge: async (challenge) => {
          challengeAccount = (await this.deps.passkeys.consumeChallenge(challenge, 'register', binding))?.accountId;
          return challengeAccount === account.id;
        },
        expectedOrigin: this.deps.rp.origin,
        expectedRPID: this.deps.rp.rpId,
        requireUserVerification: true,
      });
    } catch {
      throw new BadRequestError(challengeAccount === undefined || challengeAccount !== account.id ? 'passkey:errors.challenge' : 'passkey:errors.registration_failed', {}, backUrl);
    }
    if (!verification.verified || !verification.registrationInfo) throw new BadRequestError('passkey:errors.registration_failed', {}, backUrl);
    const info = verification.registrationInfo;
    const created = await this.deps.passkeys.create({
      accountId: account.id,
      deviceId: details.deviceId,
      credentialId: info.credential.id,
      publicKey: info.credential.publicKey,
      counter: info.credential.counter,
      transports: info.credential.transports ?? response.response.transports ?? [],
      deviceType: info.credentialDeviceType,
      backedUp: info.credentialBackedUp,
      aaguid: info.aaguid,
      name,
    });
    if (!created) throw new BadRequestError('passkey:errors.already_registered', {}, backUrl);
    return created;
  }

  /**
   * Options for `navigator.credentials.get()`. With an account: its passkeys (none, or no account
   * at all, get a stand-in credential ID derived from tenant and user ID, so the options do not
   * tell whether the ID exists or has passkeys). Without (`account` undefined): a discoverable
   * ceremony, the browser offers whatever passkeys it holds for this RP.
   */
  async authenticationOptions(
    binding: string,
    who?: { tenantId: string; userId: string; accountId: string | null },
  ): Promise<PublicKeyCredentialRequestOptionsJSON> {
    let allowCredentials: Array<{ id: string; transports?: AuthenticatorTransport[] }> | undefined;
    if (who) {
      const own = who.accountId ? await this.deps.passkeys.listForAccount(who.accountId) : [];
      allowCredentials = own.length
        ? own.map((p) => ({ id: p.credentialId, transports: p.transports as AuthenticatorTransport[] }))
        : [{ id: this.standInCredentialId(who.tenantId, who.userId) }];
    }
    const options = await (await webauthn()).generateAuthenticationOptions({
      rpID: this.deps.rp.rpId,
      userVerification: 'required',
      timeout: (this.deps.challengeTtlSeconds ?? CHALLENGE_TTL_SECONDS) * 1000,
      ...(allowCredentials ? { allowCredentials } : {}),
    });
    await this.challenge('login', binding, who?.accountId ?? null, options.challenge);
    return options;
  }

  private standInCredentialId(tenantId: string, userId: string): string {
    return createHmac('sha256', this.deps.decoyKey).update(`passkey-stand-in\0${tenantId}\0${userId}`).digest('base64url');
  }

  /**
   * The account (and its tenant) of the passkey an assertion names, unchecked: where a login without a
   * user ID goes. The assertion itself is then checked by verifyAssertion for that account.
   */
  async claimedOwner(raw: unknown, backUrl?: string): Promise<{ accountId: string; tenantId: string } | null> {
    const response = parse(assertionSchema, raw, backUrl);
    const passkey = await this.deps.passkeys.findByCredentialId(response.id);
    return passkey ? { accountId: passkey.accountId, tenantId: passkey.account.tenantId } : null;
  }

  /**
   * Verifies an assertion made for `binding`. `expect.accountId`: the account the login is for (null:
   * discoverable, any account of `expect.tenantId`). Never throws for a wrong answer: the caller counts
   * failures; malformed input is a 400.
   */
  async verifyAssertion(binding: string, raw: unknown, expect: { tenantId: string; accountId: string | null }, backUrl?: string): Promise<AssertionResult> {
    const response = parse(assertionSchema, raw, backUrl) as AuthenticationResponseJSON;
    const passkey = await this.deps.passkeys.findByCredentialId(response.id);
    if (!passkey) {
      // The challenge is spent all the same: an assertion cannot be retried with it.
      const challenge = challengeOf(response);
      if (challenge) await this.deps.passkeys.consumeChallenge(challenge, 'login', binding);
      return { ok: false, reason: 'unknown_credential' };
    }
    const belongs = passkey.account.tenantId === expect.tenantId && (expect.accountId === null || expect.accountId === passkey.accountId);
    if (!belongs) {
      const challenge = challengeOf(response);
      if (challenge) await this.deps.passkeys.consumeChallenge(challenge, 'login', binding);
      // Another tenant's passkey says nothing about this tenant's accounts.
      return { ok: false, reason: 'other_account', ...(passkey.account.tenantId === expect.tenantId && expect.accountId ? { accountId: expect.accountId } : {}) };
    }
    let challengeOk = false;
    let verification;
    try {
      verification = await (await webauthn()).verifyAuthenticationResponse({
        response,
        expectedChallenge: async (challenge) => {
          const taken = await this.deps.passkeys.consumeChallenge(challenge, 'login', binding);
          challengeOk = !!taken && (taken.accountId === null || taken.accountId === passkey.accountId);
          return challengeOk;
        },
        expectedOrigin: this.deps.rp.origin,
        expectedRPID: this.deps.rp.rpId,
        // The counter is checked below against the stored one (with compare-and-set), not here.
        credential: { id: passkey.credentialId, publicKey: new Uint8Array(passkey.publicKey), counter: 0, transports: passkey.transports as AuthenticatorTransport[] },
        requireUserVerification: true,
      });
    } catch {
      return { ok: false, reason: challengeOk ? 'invalid' : 'challenge', accountId: passkey.accountId };
    }
    if (!verification.verified) return { ok: false, reason: 'invalid', accountId: passkey.accountId };
    const info = verification.authenticationInfo;
    const stored = passkey.counter;
    const regressed = (info.newCounter > 0 || stored > 0n) && BigInt(info.newCounter) <= stored;
    if (regressed || !(await this.deps.passkeys.recordUse(passkey.id, stored, info.newCounter, info.credentialBackedUp))) {
      return { ok: false, reason: 'counter_regression', accountId: passkey.accountId };
    }
    return { ok: true, passkey, accountId: passkey.accountId, amr: passkeyAmr(info.credentialDeviceType, info.userVerified) };
  }
}

function validName(raw: string, backUrl?: string): string {
  const name = raw.normalize('NFKC').trim();
  if (!name) throw new BadRequestError('passkey:errors.name_required', {}, backUrl);
  // Control characters (a NUL byte cannot even be stored) have no place in a name shown on screens.
  if (/\p{Cc}/u.test(name)) throw new BadRequestError('passkey:errors.name_invalid', {}, backUrl);
  if (name.length > PASSKEY_NAME_MAX) throw new BadRequestError('passkey:errors.name_too_long', { max: PASSKEY_NAME_MAX }, backUrl);
  return name;
}

function uuidBytes(uuid: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(uuid.replace(/-/g, ''), 'hex'));
}

/** The challenge inside an assertion's client data, if it can be read. */
function challengeOf(response: AuthenticationResponseJSON): string | undefined {
  try {
    const data = JSON.parse(Buffer.from(response.response.clientDataJSON, 'base64url').toString('utf8')) as { challenge?: unknown };
    return typeof data.challenge === 'string' ? data.challenge : undefined;
  } catch {
    return undefined;
  }
}
