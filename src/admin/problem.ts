import type { Context } from 'koa';
import type { z } from 'zod';
import { AccountValidationError } from '../account/account-errors.js';
import { AppError } from '../http/errors.js';
import { negotiateLocale, translator } from '../i18n/index.js';

/** Where the management API lives; errors under it are rendered as problem+json. */
export const API_PREFIX = '/api/v1';
export const PROBLEM_TYPE_PREFIX = 'urn:anshin-login:problem:';

/** One invalid field of a request, named as `devices[0].email` (like AccountValidationError). */
export interface FieldProblem {
  field: string;
  messageKey: string;
  params?: Record<string, string | number>;
}

/** A request body or query that failed its schema; every failing field is named. */
export class RequestValidationError extends AppError {
  constructor(readonly fields: FieldProblem[]) {
    super('validation_failed', 400, 'management:errors.validation_failed');
  }
}

/** RFC 6750: 401 for a missing or bad token, 403 for a token without the needed scope. */
export class BearerTokenError extends AppError {
  constructor(
    readonly reason: 'token_missing' | 'token_invalid' | 'token_expired' | 'insufficient_scope',
    readonly requiredScope: string,
  ) {
    super(reason === 'insufficient_scope' ? 'insufficient_scope' : 'invalid_token', reason === 'insufficient_scope' ? 403 : 401, `management:errors.${reason}`);
  }

  challenge(description: string): string {
    // No error code when no credentials came at all (RFC 6750 section 3.1).
    if (this.reason === 'token_missing') return 'Bearer realm="management"';
    return `Bearer realm="management", error="${this.code}", error_description="${description.replace(/["\\]/g, '')}"${this.reason === 'insufficient_scope' ? `, scope="${this.requiredScope}"` : ''}`;
  }
}

export class UnsupportedMediaTypeError extends AppError {
  constructor() {
    super('unsupported_media_type', 415, 'management:errors.unsupported_media_type');
  }
}

/** Turns zod issues into named fields with translatable messages (zod's own texts are English only). */
export function fieldProblems(error: z.ZodError, input: unknown): FieldProblem[] {
  const out: FieldProblem[] = [];
  for (const issue of error.issues) {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ field: fieldName([...path, key]), messageKey: 'management:fields.unknown_field' });
      continue;
    }
    out.push({ field: fieldName(path), ...issueMessage(issue, valueAt(input, path)) });
  }
  return out;
}

function issueMessage(issue: z.core.$ZodIssue, value: unknown): Omit<FieldProblem, 'field'> {
  switch (issue.code) {
    case 'invalid_type':
      return value === undefined ? { messageKey: 'management:fields.required' } : { messageKey: 'management:fields.invalid_type', params: { expected: issue.expected } };
    case 'too_small': {
      const kind = issue.origin === 'string' ? 'too_short' : issue.origin === 'array' ? 'too_few' : 'too_small';
      return { messageKey: `management:fields.${kind}`, params: { minimum: Number(issue.minimum) } };
    }
    case 'too_big': {
      const kind = issue.origin === 'string' ? 'too_long' : issue.origin === 'array' ? 'too_many' : 'too_big';
      return { messageKey: `management:fields.${kind}`, params: { maximum: Number(issue.maximum) } };
    }
    case 'invalid_value':
      return { messageKey: 'management:fields.invalid_value', params: { values: issue.values.map(String).join(', ') } };
    case 'custom':
      return { messageKey: typeof issue.params?.messageKey === 'string' ? issue.params.messageKey : 'management:fields.invalid' };
    default:
      return { messageKey: 'management:fields.invalid' };
  }
}

function fieldName(path: Array<string | number>): string {
  if (path.length === 0) return 'body';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function valueAt(input: unknown, path: Array<string | number>): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

/**
 * Renders errors under the management API as RFC 9457 problem+json in the caller's language
 * (Accept-Language; Japanese by default): `type` names the problem, `errors` the invalid fields.
 */
export function renderProblem(ctx: Context, error: AppError, thrown: unknown): boolean {
  if (ctx.path !== API_PREFIX && !ctx.path.startsWith(`${API_PREFIX}/`)) return false;
  const locale = negotiateLocale([], ctx.get('accept-language'));
  const t = translator(locale);
  const status = error.status;
  let detailKey = error.messageKey;
  // Koa's and the body parser's own errors arrive with generic keys; say what went wrong.
  if (error.code === 'payload_too_large') detailKey = 'management:errors.payload_too_large';
  else if (thrown instanceof SyntaxError && error.status === 400) detailKey = 'management:errors.malformed';
  else if (error.code === 'not_found') detailKey = 'management:errors.not_found';
  else if (error.code === 'method_not_allowed') detailKey = 'management:errors.method_not_allowed';

  const detail = t(detailKey, error.params);
  const title = t(`management:titles.${status}`, { defaultValue: t(`management:titles.${status >= 500 ? 500 : 400}`) });
  const problem: Record<string, unknown> = { type: `${PROBLEM_TYPE_PREFIX}${error.code}`, title, status, detail };
  if (error instanceof RequestValidationError) {
    problem.errors = error.fields.map((f) => ({ field: f.field, message: t(f.messageKey, f.params ?? {}) }));
  } else if (error instanceof AccountValidationError) {
    problem.detail = t('management:errors.validation_failed');
    problem.errors = [{ field: error.field, message: detail }];
  }
  // Header values must be ASCII: the challenge's description is always English.
  if (error instanceof BearerTokenError) ctx.set('WWW-Authenticate', error.challenge(translator('en')(detailKey)));
  ctx.status = status;
  ctx.body = problem;
  ctx.type = 'application/problem+json';
  ctx.set('Content-Language', locale);
  return true;
}
