import { AppError } from '../http/errors.js';

export class AccountNotFoundError extends AppError {
  constructor() {
    super('account_not_found', 404, 'account:errors.not_found');
  }
}

export class AccountExistsError extends AppError {
  constructor() {
    super('account_exists', 409, 'account:errors.exists');
  }
}

/** Input that breaks a rule of the tenant's contract or of the data model; names the field. */
export class AccountValidationError extends AppError {
  constructor(
    readonly field: string,
    messageKey: string,
    params: Record<string, string | number> = {},
  ) {
    super('validation_failed', 400, messageKey, params);
  }
}
