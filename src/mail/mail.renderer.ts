import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pug from 'pug';
import { translator, type Locale } from '../i18n/index.js';
import { PermanentMailError, type MailJob, type RenderedMail } from './mail.types.js';

/**
 * Mail templates are plain text, one file per template and locale: `templates/<template>.<locale>.txt`.
 * The first line is `Subject: ...`, then a blank line, then the body. `{{name}}` inserts a param,
 * `{{*name}}` inserts it emphasised in the HTML part (the code in an OTP mail). `{{serviceName}}` is
 * always available. `templates/_footer.<locale>.txt` is appended to every mail, and
 * `templates/layout.pug` turns the same words into the HTML part, so a template never holds markup.
 */
export interface MailRenderer {
  render(job: Pick<MailJob, 'template' | 'locale' | 'params'>): RenderedMail;
}

export const DEFAULT_TEMPLATES_DIR = join(dirname(fileURLToPath(import.meta.url)), 'templates');

interface Segment {
  text: string;
  strong: boolean;
}

/** paragraph -> line -> segment */
type Paragraph = Segment[][];

interface ParsedTemplate {
  subject: string;
  body: string;
}

const PLACEHOLDER = /\{\{(\*?)([A-Za-z][A-Za-z0-9_]*)\}\}/g;

export function createMailRenderer(options: { templatesDir?: string } = {}): MailRenderer {
  const dir = options.templatesDir ?? DEFAULT_TEMPLATES_DIR;
  const files = new Map<string, string>();
  let layout: pug.compileTemplate | undefined;

  function readTemplateFile(name: string): string {
    let source = files.get(name);
    if (source === undefined) {
      try {
        source = readFileSync(join(dir, name), 'utf8').replace(/\r\n?/g, '\n');
      } catch (err) {
        throw new PermanentMailError(`mail template file ${name} cannot be read`, { cause: err });
      }
      files.set(name, source);
    }
    return source;
  }

  function parseTemplate(template: string, locale: Locale): ParsedTemplate {
    const name = `${template}.${locale}.txt`;
    const source = readTemplateFile(name);
    const match = /^Subject:[ \t]*(.*)\n\n([\s\S]*)$/.exec(source);
    if (!match) throw new PermanentMailError(`mail template ${name} must start with "Subject: ..." and a blank line`);
    return { subject: match[1] ?? '', body: (match[2] ?? '').trim() };
  }

  return {
    render({ template, locale, params }) {
      const values: Record<string, string> = { ...params, serviceName: translator(locale)('common:service_name') };
      const { subject, body } = parseTemplate(template, locale);
      const footer = readTemplateFile(`_footer.${locale}.txt`).trim();

      const missing = new Set<string>();
      const toParagraphs = (source: string): Paragraph[] =>
        source.split(/\n{2,}/).map((paragraph) => paragraph.split('\n').map((line) => segments(line, values, missing)));
      const subjectSegments = segments(subject, values, missing);
      const bodyParagraphs = toParagraphs(body);
      const footerParagraphs = toParagraphs(footer);
      if (missing.size) {
        throw new PermanentMailError(`mail template ${template} needs param(s): ${[...missing].join(', ')}`);
      }

      // A param in the subject must not be able to start a new header line.
      const renderedSubject = plain([subjectSegments]).replace(/[\r\n]+/g, ' ').trim();
      const text = `${bodyParagraphs.map(plain).join('\n\n')}\n\n-- \n${footerParagraphs.map(plain).join('\n\n')}\n`;
      layout ??= pug.compileFile(join(dir, 'layout.pug'));
      const html = layout({
        lang: locale,
        subject: renderedSubject,
        serviceName: values.serviceName,
        paragraphs: bodyParagraphs,
        footer: footerParagraphs,
      });
      return { subject: renderedSubject, text, html };
    },
  };
}

function segments(line: string, values: Record<string, string>, missing: Set<string>): Segment[] {
  const result: Segment[] = [];
  let last = 0;
  for (const m of line.matchAll(PLACEHOLDER)) {
    const [whole, star, key = ''] = m;
    if (m.index > last) result.push({ text: line.slice(last, m.index), strong: false });
    const value = values[key];
    if (value === undefined) missing.add(key);
    result.push({ text: value ?? '', strong: star === '*' });
    last = m.index + whole.length;
  }
  if (last < line.length) result.push({ text: line.slice(last), strong: false });
  return result;
}

function plain(paragraph: Paragraph): string {
  return paragraph.map((line) => line.map((s) => s.text).join('')).join('\n');
}

let defaultRenderer: MailRenderer | undefined;

/** Renders with the bundled templates. */
export function renderMail(job: Pick<MailJob, 'template' | 'locale' | 'params'>): RenderedMail {
  defaultRenderer ??= createMailRenderer();
  return defaultRenderer.render(job);
}
