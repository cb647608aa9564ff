import type { AccountService, AccountStatusView } from '../account/account.service.js';
import type { AccountSessionService, AccountSessionView } from '../account/account-session.service.js';
import type { CertificateService, CertificateSummary } from '../certificates/certificate.service.js';
import type { AccountWithDevices } from '../persistence/account.repository.js';
import type { LoginEvent, LoginEventRepository } from '../persistence/login-event.repository.js';
import type { Passkey } from '../persistence/passkey.repository.js';
import { isLocked } from '../lockout/account-lock.js';

/** Rows per page of the console's account search. */
export const SEARCH_PAGE_SIZE = 20;
/** Login events on the account page (the newest). */
export const DETAIL_LOGIN_EVENTS = 10;

export interface AccountSearch {
  userIdPrefix?: string;
  email?: string;
  status?: AccountStatusView;
  page: number;
}

export interface SearchPage {
  items: AccountWithDevices[];
  total: number;
  page: number;
  pages: number;
}

/** One device as the account page shows it: proven or not, and its current certificate's expiry. */
export interface DeviceDetail {
  number: number;
  email: string;
  kind: string;
  verified: boolean;
  pendingEmail: string | null;
  certificate: { serial: string; notAfter: Date; status: CertificateSummary['status'] } | null;
}

export interface AccountDetail {
  account: AccountWithDevices;
  locked: boolean;
  devices: DeviceDetail[];
  passkeys: Array<{ name: string; createdAt: Date }>;
  logins: LoginEvent[];
  sessions: AccountSessionView[];
}

/**
 * What the support console reads about a tenant's accounts. Every look-up goes through
 * AccountService.find with the staff member's tenant, so an account of another tenant is simply not
 * found (404), whatever the request names. Changes go through AccountService and the other services
 * directly (the console router), which hold the rules.
 */
export class SupportConsoleService {
  constructor(
    private readonly deps: {
      accounts: Pick<AccountService, 'find' | 'list'>;
      certificates: Pick<CertificateService, 'listForAccount'>;
      passkeys: { listForAccount(accountId: string): Promise<Passkey[]> };
      loginEvents: Pick<LoginEventRepository, 'listForAccount'>;
      sessions: Pick<AccountSessionService, 'list'>;
    },
  ) {}

  async search(tenantId: string, q: AccountSearch): Promise<SearchPage> {
    const { items, total } = await this.deps.accounts.list(tenantId, { status: q.status, userIdPrefix: q.userIdPrefix, email: q.email, page: q.page, perPage: SEARCH_PAGE_SIZE });
    return { items, total, page: q.page, pages: Math.ceil(total / SEARCH_PAGE_SIZE) };
  }

  async detail(tenantId: string, userId: string): Promise<AccountDetail> {
    const account = await this.deps.accounts.find(tenantId, userId);
    const [certificates, passkeys, logins, sessions] = await Promise.all([
      this.deps.certificates.listForAccount(account.id),
      this.deps.passkeys.listForAccount(account.id),
      this.deps.loginEvents.listForAccount(account.id, { take: DETAIL_LOGIN_EVENTS }),
      // No session is "this browser's": the staff member's own session is not the account's.
      this.deps.sessions.list({ accountId: account.id, tenantId, currentSessionUid: '' }),
    ]);
    const current = (deviceId: string) => certificates.find((c) => c.deviceId === deviceId && c.status !== 'revoked');
    return {
      account,
      locked: isLocked(account),
      devices: account.devices.map((d) => {
        const c = current(d.id);
        return {
          number: d.number,
          email: d.email,
          kind: d.kind,
          verified: d.verifiedAt !== null,
          pendingEmail: d.pendingEmail,
          certificate: c ? { serial: c.serial, notAfter: c.notAfter, status: c.status } : null,
        };
      }),
      passkeys: passkeys.map((p) => ({ name: p.name, createdAt: p.createdAt })),
      logins,
      sessions,
    };
  }
}
