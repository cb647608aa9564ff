import type { Device, Prisma, PrismaClient } from './generated/client.js';

export type { Device } from './generated/client.js';
export type DeviceKindValue = 'pc' | 'mobile' | 'smartphone';

/** A proof code to store with a device change (only its HMAC). */
export interface NewDeviceCode {
  /** The code row's id, which its mail carries (a mail given up marks it: DeviceService.undelivered). */
  id: string;
  purpose: string;
  codeHmac: string;
  expiresAt: Date;
}

export type AddDeviceOutcome = { ok: true; device: Device } | { ok: false; reason: 'too_many' | 'taken' };
export type ChangeDeviceOutcome = { ok: true; before: Device; device: Device } | { ok: false; reason: 'not_found' | 'taken' };
export type RemoveDeviceOutcome = { ok: true; device: Device } | { ok: false; reason: 'not_found' | 'last' | 'last_proven' };

/**
 * What a submitted proof code did. `exhausted`: too many wrong codes, so the procedure was called off
 * (the unproven device removed, or the pending address dropped); `before` is the device as it was.
 */
export type DeviceCodeOutcome =
  | { result: 'ok'; before: Device; device: Device }
  | { result: 'wrong'; failures: number }
  | { result: 'expired' }
  | { result: 'none' }
  | { result: 'exhausted'; before: Device };

type Tx = Prisma.TransactionClient;

/** The address a device's proof code is for: the pending new one, else the (unproven) current one. */
export function proofTarget(d: Pick<Device, 'email' | 'pendingEmail' | 'verifiedAt'>): string | null {
  return d.pendingEmail ?? (d.verifiedAt ? null : d.email);
}

const FAILURE_EVENT = 'device_verify_failed';

/**
 * The account area's device changes. Each runs in one transaction with the account row locked, so two
 * tabs can't both take the last free slot or both delete "the other" device, and wrong proof codes are
 * counted before any further code is checked (parallel guesses can't slip past the limit).
 */
export class DeviceRepository {
  constructor(private readonly prisma: PrismaClient) {}

  private inLock<T>(accountId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.prisma.$transaction(async (tx) => {
      await tx.$queryRaw`SELECT id FROM accounts WHERE id = ${accountId}::uuid FOR UPDATE`;
      return fn(tx);
    });
  }

  /** Whether `email` is already one of the account's addresses (current or pending), other than `exceptId`'s. */
  private static taken(devices: Device[], email: string, exceptId?: string): boolean {
    const wanted = email.toLowerCase();
    return devices.some((d) => d.id !== exceptId && (d.email.toLowerCase() === wanted || d.pendingEmail?.toLowerCase() === wanted));
  }

  /**
   * A new proof procedure: earlier codes of the purpose are deleted, so the procedure's failure window
   * starts at its first code (resends keep it; account-level codes are not purged by housekeeping).
   */
  private static async startCode(tx: Tx, accountId: string, code: NewDeviceCode) {
    await tx.oneTimePassword.deleteMany({ where: { accountId, purpose: code.purpose, flowId: null } });
    await tx.oneTimePassword.create({ data: { accountId, flowId: null, ...code } });
  }

  private static async retireCodes(tx: Tx, accountId: string, purpose: string) {
    await tx.oneTimePassword.updateMany({ where: { accountId, purpose, flowId: null, consumedAt: null }, data: { consumedAt: new Date() } });
  }

  /** Login codes already mailed stop working when an address leaves the account (it may have read them). */
  private static async retireLoginCodes(tx: Tx, accountId: string) {
    await tx.oneTimePassword.updateMany({ where: { accountId, purpose: 'login', consumedAt: null }, data: { consumedAt: new Date() } });
  }

  /** Calls off a proof: an unproven device goes, a pending address is dropped; its codes stop working. */
  private static async callOff(tx: Tx, device: Device, purpose: string) {
    if (!device.verifiedAt) await tx.device.delete({ where: { id: device.id } });
    else await tx.device.update({ where: { id: device.id }, data: { pendingEmail: null } });
    await DeviceRepository.retireCodes(tx, device.accountId, purpose);
  }

  /** The account's e-mail claim may change: its updated_at (the OpenID claim) moves with it. */
  private static touchAccount(tx: Tx, accountId: string) {
    return tx.account.update({ where: { id: accountId }, data: { updatedAt: new Date() }, select: { id: true } });
  }

  private static device(tx: Tx, accountId: string, deviceId: string) {
    return tx.device.findFirst({ where: { id: deviceId, accountId } });
  }

  /** Adds an unproven device (next free number) and its first proof code, within the contract's maximum. */
  addUnproven(input: { id: string; accountId: string; email: string; kind: DeviceKindValue; maxDevices: number; code: NewDeviceCode }): Promise<AddDeviceOutcome> {
    return this.inLock(input.accountId, async (tx) => {
      const devices = await tx.device.findMany({ where: { accountId: input.accountId } });
      if (devices.length >= input.maxDevices) return { ok: false, reason: 'too_many' } as const;
      if (DeviceRepository.taken(devices, input.email)) return { ok: false, reason: 'taken' } as const;
      const number = devices.reduce((n, d) => Math.max(n, d.number), 0) + 1;
      const device = await tx.device.create({ data: { id: input.id, accountId: input.accountId, number, email: input.email, kind: input.kind, verifiedAt: null } });
      await DeviceRepository.startCode(tx, input.accountId, input.code);
      return { ok: true, device } as const;
    });
  }

  /**
   * Changes a device: the kind at once; a new address (with `code`) waits in pendingEmail until it is
   * proven; `dropPending` calls off a pending address (the user changed back to the current one).
   */
  change(input: { accountId: string; deviceId: string; kind: DeviceKindValue; pendingEmail?: string; code?: NewDeviceCode; dropPending?: { purpose: string } }): Promise<ChangeDeviceOutcome> {
    return this.inLock(input.accountId, async (tx) => {
      const devices = await tx.device.findMany({ where: { accountId: input.accountId } });
      const before = devices.find((d) => d.id === input.deviceId);
      if (!before) return { ok: false, reason: 'not_found' } as const;
      if (input.pendingEmail !== undefined && DeviceRepository.taken(devices, input.pendingEmail, before.id)) return { ok: false, reason: 'taken' } as const;
      const data: Prisma.DeviceUpdateInput = { kind: input.kind };
      if (input.pendingEmail !== undefined) data.pendingEmail = input.pendingEmail;
      else if (input.dropPending) data.pendingEmail = null;
      const device = await tx.device.update({ where: { id: before.id }, data });
      if (input.code) await DeviceRepository.startCode(tx, input.accountId, input.code);
      else if (input.dropPending) await DeviceRepository.retireCodes(tx, input.accountId, input.dropPending.purpose);
      return { ok: true, before, device } as const;
    });
  }

  /** A fresh code for the running proof (the earlier one stops working; the failure count goes on). */
  resendCode(input: { accountId: string; deviceId: string; code: NewDeviceCode }): Promise<Device | null> {
    return this.inLock(input.accountId, async (tx) => {
      const device = await DeviceRepository.device(tx, input.accountId, input.deviceId);
      if (!device || !proofTarget(device)) return null;
      await DeviceRepository.retireCodes(tx, input.accountId, input.code.purpose);
      await tx.oneTimePassword.create({ data: { accountId: input.accountId, flowId: null, ...input.code } });
      return device;
    });
  }

  /** The newest proof code of a purpose (for the resend wait and the expiry shown). */
  latestCode(accountId: string, purpose: string) {
    return this.prisma.oneTimePassword.findFirst({ where: { accountId, purpose, flowId: null }, orderBy: { createdAt: 'desc' } });
  }

  /**
   * Checks a proof code. Failures are stored as account events (with who and where) and counted since
   * the procedure's first code; at `maxFailures` the procedure is called off. `matches` compares the
   * stored HMAC with the submitted code for the address the code was sent to.
   */
  checkCode(input: {
    accountId: string;
    tenantId: string;
    deviceId: string;
    purpose: string;
    maxFailures: number;
    sourceIp: string | null;
    matches: (codeHmac: string, target: string) => boolean;
  }): Promise<DeviceCodeOutcome> {
    return this.inLock(input.accountId, async (tx): Promise<DeviceCodeOutcome> => {
      const before = await DeviceRepository.device(tx, input.accountId, input.deviceId);
      const target = before ? proofTarget(before) : null;
      if (!before || !target) return { result: 'none' };
      const codes = await tx.oneTimePassword.findMany({ where: { accountId: input.accountId, purpose: input.purpose, flowId: null }, orderBy: { createdAt: 'asc' } });
      const first = codes[0];
      const latest = codes.at(-1);
      if (!first || !latest) return { result: 'none' };
      const rows = await tx.$queryRaw<Array<{ n: number }>>`
        SELECT count(*)::int AS n FROM account_events
         WHERE account_id = ${input.accountId}::uuid AND type = ${FAILURE_EVENT}
           AND detail->>'deviceId' = ${input.deviceId} AND created_at >= ${first.createdAt}`;
      const failures = rows[0]?.n ?? 0;
      if (failures >= input.maxFailures) {
        await DeviceRepository.callOff(tx, before, input.purpose);
        return { result: 'exhausted', before };
      }
      if (latest.consumedAt) return { result: 'none' };
      if (input.matches(latest.codeHmac, target)) {
        if (latest.expiresAt.getTime() <= Date.now()) return { result: 'expired' };
        await tx.oneTimePassword.update({ where: { id: latest.id }, data: { consumedAt: new Date() } });
        const device = await tx.device.update({ where: { id: before.id }, data: { email: target, pendingEmail: null, verifiedAt: new Date() } });
        await DeviceRepository.touchAccount(tx, input.accountId);
        // The old address leaves the account: codes already mailed to it stop working.
        if (before.verifiedAt && before.email !== target) await DeviceRepository.retireLoginCodes(tx, input.accountId);
        return { result: 'ok', before, device };
      }
      await tx.accountEvent.create({
        data: { tenantId: input.tenantId, accountId: input.accountId, type: FAILURE_EVENT, actor: 'user', sourceIp: input.sourceIp, detail: { deviceId: before.id, number: before.number, email: target } },
      });
      if (failures + 1 >= input.maxFailures) {
        await DeviceRepository.callOff(tx, before, input.purpose);
        return { result: 'exhausted', before };
      }
      return { result: 'wrong', failures: failures + 1 };
    });
  }

  /** Calls off a running proof at the user's request (the unproven device goes, or the pending address). */
  cancelProof(input: { accountId: string; deviceId: string; purpose: string }): Promise<Device | null> {
    return this.inLock(input.accountId, async (tx) => {
      const device = await DeviceRepository.device(tx, input.accountId, input.deviceId);
      if (!device || !proofTarget(device)) return null;
      await DeviceRepository.callOff(tx, device, input.purpose);
      return device;
    });
  }

  /**
   * Deletes a device, never the account's last one nor its last proven one (the account could no
   * longer receive login codes). Codes already mailed stop working with it.
   */
  remove(input: { accountId: string; deviceId: string; purpose: string }): Promise<RemoveDeviceOutcome> {
    return this.inLock(input.accountId, async (tx) => {
      const devices = await tx.device.findMany({ where: { accountId: input.accountId } });
      const device = devices.find((d) => d.id === input.deviceId);
      if (!device) return { ok: false, reason: 'not_found' } as const;
      if (devices.length <= 1) return { ok: false, reason: 'last' } as const;
      if (device.verifiedAt && devices.filter((d) => d.verifiedAt).length <= 1) return { ok: false, reason: 'last_proven' } as const;
      await tx.device.delete({ where: { id: device.id } });
      await tx.oneTimePassword.deleteMany({ where: { accountId: input.accountId, purpose: input.purpose, flowId: null } });
      if (device.verifiedAt) {
        await DeviceRepository.retireLoginCodes(tx, input.accountId);
        await DeviceRepository.touchAccount(tx, input.accountId);
      }
      return { ok: true, device } as const;
    });
  }
}
