import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
import { ConfigError, formatIssues } from './tenants.js';

/** One question of the pull-down (秘密の質問), in both languages. */
export const secretQuestionSchema = z.object({ id: z.string().regex(/^[a-z0-9_-]{1,40}$/), ja: z.string().min(1), en: z.string().min(1) }).strict();
export type SecretQuestion = z.infer<typeof secretQuestionSchema>;

const fileSchema = z
  .object({ questions: z.array(secretQuestionSchema).min(1) })
  .strict()
  .refine((f) => new Set(f.questions.map((q) => q.id)).size === f.questions.length, { message: 'question ids must be unique', path: ['questions'] });

export function parseSecretQuestions(source: string, text: string): SecretQuestion[] {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new ConfigError(`${source} is not valid YAML: ${(e as Error).message}`);
  }
  const r = fileSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(source, r.error));
  return r.data.questions;
}

export function loadSecretQuestions(file: string): SecretQuestion[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read secret questions file ${file}: ${(e as Error).message}`);
  }
  return parseSecretQuestions(file, text);
}
