import { ACCOUNT_COLUMNS, accountFromRow, type AccountRow, type AccountWithDevices } from './account.repository.js';
import { FLOW_COLUMNS, flowFromRow, type FlowRow, type LoginFlow } from './login-flow.repository.js';
import type { StoredPayloadRow } from './oidc-payload.repository.js';
import { NEWEST_CODE_FIRST, OTP_COLUMNS, otpFromRow, type OtpRow, type OneTimePassword } from './one-time-password.repository.js';
import type { Sql } from './sql.js';

/** Everything a login step needs from the database, loaded together at the start of the request. */
export interface LoginContextData {
  /** oidc-provider's stored interaction (null: none), for the adapter to serve without another read. */
  interaction: StoredPayloadRow | null;
  flow: LoginFlow | null;
  /** The flow's account with its devices (null: no account chosen yet, or none). */
  account: AccountWithDevices | null;
  /** The flow's newest login code, consumed or not (null: none issued). */
  latestCode: OneTimePassword | null;
  /** For the user-ID step: the account of the ID submitted, in the flow's tenant (null: none). */
  submitted?: { userId: string; account: AccountWithDevices | null };
}

interface Row {
  payload: StoredPayloadRow['payload'] | null;
  expires_at: Date | null;
  consumed_at: Date | null;
  found: boolean;
  flow: FlowRow | null;
  account: AccountRow | null;
  code: OtpRow | null;
  submitted: AccountRow | null;
}

const CONTEXT_COLUMNS = `SELECT i.payload, i.expires_at, i.consumed_at, i.id IS NOT NULL AS found,
  (SELECT row_to_json(x) FROM (SELECT ${FLOW_COLUMNS} FROM login_flows f WHERE f.interaction_uid = $1) x) AS flow,
  (SELECT row_to_json(x) FROM (SELECT ${ACCOUNT_COLUMNS} FROM login_flows f JOIN accounts a ON a.id = f.account_id
     WHERE f.interaction_uid = $1) x) AS account,
  (SELECT row_to_json(x) FROM (SELECT ${OTP_COLUMNS} FROM login_flows f JOIN one_time_passwords o ON o.flow_id = f.id
     WHERE f.interaction_uid = $1 AND o.purpose = 'login' ORDER BY ${NEWEST_CODE_FIRST} LIMIT 1) x) AS code`;
const CONTEXT_FROM = `FROM (SELECT 1) AS one LEFT JOIN oidc_payloads i ON i.id = $1 AND i.type = 'Interaction'`;

/**
 * Two statements rather than one with an optional part: a prepared statement is planned once
 * (PostgreSQL's generic plan) only when that plan costs no more than planning each call would, and a
 * parameter that may switch a part off ($2 IS NOT NULL) kept PostgreSQL planning the statement anew
 * on every page of every login.
 */
const CONTEXT = `${CONTEXT_COLUMNS}, NULL::json AS submitted ${CONTEXT_FROM}`;
const CONTEXT_WITH_SUBMITTED = `${CONTEXT_COLUMNS},
  (SELECT row_to_json(x) FROM (SELECT ${ACCOUNT_COLUMNS} FROM accounts a
     WHERE a.user_id = $2
       AND a.tenant_id = COALESCE((SELECT f.tenant_id FROM login_flows f WHERE f.interaction_uid = $1), $3::jsonb ->> (i.payload -> 'params' ->> 'client_id'))) x) AS submitted
  ${CONTEXT_FROM}`;

/**
 * One statement per login step instead of one per layer: the interaction, its login flow, the
 * flow's account with its devices and the flow's newest code (rows on the side come back as JSON).
 */
export class LoginContextRepository {
  private readonly tenants: string;

  /** `tenantOfClient`: each client's tenant (a submitted user ID is looked up in the interaction client's tenant). */
  constructor(
    private readonly sql: Sql,
    tenantOfClient: Record<string, string>,
  ) {
    this.tenants = JSON.stringify(tenantOfClient);
  }

  /** `submittedUserId`: also look up the account of this user ID (the user-ID step). */
  async load(interactionUid: string, submittedUserId?: string): Promise<LoginContextData> {
    const [row] = await (submittedUserId === undefined
      ? this.sql.query<Row>(CONTEXT, [interactionUid])
      : this.sql.query<Row>(CONTEXT_WITH_SUBMITTED, [interactionUid, submittedUserId, this.tenants]));
    if (!row) throw new Error('login context query returned no row');
    return {
      interaction: row.found && row.payload ? { payload: row.payload, expires_at: row.expires_at, consumed_at: row.consumed_at } : null,
      flow: row.flow ? flowFromRow(row.flow) : null,
      account: row.account ? accountFromRow(row.account) : null,
      latestCode: row.code ? otpFromRow(row.code) : null,
      ...(submittedUserId !== undefined && row.found ? { submitted: { userId: submittedUserId, account: row.submitted ? accountFromRow(row.submitted) : null } } : {}),
    };
  }
}
