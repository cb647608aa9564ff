import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import i18next, { type Resource, type ResourceLanguage, type TFunction } from 'i18next';
import { setBounded } from '../bounded-map.js';

/** Japanese first (the default), English second. */
export const LOCALES = ['ja', 'en'] as const;
export type Locale = (typeof LOCALES)[number];
export const DEFAULT_LOCALE: Locale = 'ja';

const localesDir = join(dirname(fileURLToPath(import.meta.url)), 'locales');

/** Loads every `locales/<lang>/<namespace>.json`; each feature keeps its texts in its own namespace. */
function loadResources(): Resource {
  const resources: Resource = {};
  for (const lang of LOCALES) {
    const namespaces: ResourceLanguage = {};
    for (const file of readdirSync(join(localesDir, lang))) {
      if (!file.endsWith('.json')) continue;
      namespaces[file.slice(0, -5)] = JSON.parse(readFileSync(join(localesDir, lang, file), 'utf8')) as ResourceLanguage;
    }
    resources[lang] = namespaces;
  }
  return resources;
}

const instance = i18next.createInstance();
const resources = loadResources();
await instance.init({
  resources,
  lng: DEFAULT_LOCALE,
  fallbackLng: DEFAULT_LOCALE,
  supportedLngs: [...LOCALES],
  ns: Object.keys(resources[DEFAULT_LOCALE] ?? {}),
  defaultNS: 'common',
  interpolation: { escapeValue: false }, // pug escapes on output
  returnNull: false,
  initAsync: false,
});

export function isLocale(value: unknown): value is Locale {
  return typeof value === 'string' && (LOCALES as readonly string[]).includes(value);
}

const translators = new Map<Locale, TFunction>();
/** Lookups remembered per locale (plain keys, and keys with the values they were given); the oldest go first. */
const MAX_REMEMBERED = 10_000;

/**
 * A translate function fixed to one locale; keys are `namespace:key`. One function per locale, shared
 * by every request: a plain `t(key)` (no options: most of what a page asks for), or one whose options
 * are only string or number values to insert (`t('login:for_site', { site })`), is looked up once and
 * remembered, since the texts do not change while the process runs. i18next's own lookup took about a
 * quarter of the CPU of rendering the user-ID page.
 */
export function translator(locale: Locale): TFunction {
  let t = translators.get(locale);
  if (!t) {
    t = rememberingPlainLookups(instance.getFixedT(locale));
    translators.set(locale, t);
  }
  return t;
}

function rememberingPlainLookups(t: TFunction): TFunction {
  const call = t as unknown as (...args: unknown[]) => string;
  const remembered = new Map<string, string>();
  const fn = (...args: unknown[]): string => {
    const [key, options] = args;
    if (typeof key !== 'string' || args.length > 2) return call(...args);
    // A text with only string or number values to insert is as fixed as a plain one, for those
    // values; counts (plurals), contexts and other options go to i18next every time.
    const id = args.length === 1 ? key : valuesId(key, options);
    if (id === undefined) return call(...args);
    let text = remembered.get(id);
    if (text === undefined) {
      text = call(...args);
      // Oldest first out: texts with values (a site's name) vary more than plain ones.
      setBounded(remembered, id, text, MAX_REMEMBERED);
    }
    return text;
  };
  // TFunction's overloaded, branded type cannot be spelled by a plain function; it is called the same way.
  return fn as unknown as TFunction;
}

/**
 * `key` with its interpolation values as one string, or undefined unless every option is a value to
 * insert: a string, or a finite number (the code page's minutes, a field's maximum length). The type
 * is part of the id, so 5 and '5' are remembered apart.
 */
function valuesId(key: string, options: unknown): string | undefined {
  if (!options || typeof options !== 'object' || Object.getPrototypeOf(options) !== Object.prototype) return undefined;
  let id = key;
  for (const [name, value] of Object.entries(options)) {
    if (OPTION_NAMES.has(name)) return undefined;
    if (typeof value === 'string') id += `\u0000${name}\u0001${value}`;
    else if (typeof value === 'number' && Number.isFinite(value)) id += `\u0000${name}\u0002${value}`;
    else return undefined;
  }
  return id;
}

/** i18next's own option names (not values to insert): calls with any of them are not remembered. */
const OPTION_NAMES = new Set(['count', 'context', 'lng', 'lngs', 'ns', 'defaultValue', 'returnObjects', 'joinArrays', 'replace', 'interpolation', 'postProcess', 'keySeparator', 'nsSeparator', 'ordinal', 'fallbackLng']);

/**
 * Picks the locale: an explicit choice (query `lang`, the `lang` cookie, `ui_locales`) first, then
 * the Accept-Language header, then Japanese.
 */
export function negotiateLocale(explicit: Array<unknown>, acceptLanguage: string | undefined): Locale {
  for (const candidate of explicit) {
    // Anything but a string (a repeated ?lang=, an object from a parser) is no choice.
    if (typeof candidate !== 'string' || !candidate) continue;
    for (const tag of candidate.split(/\s+/)) {
      const base = tag.toLowerCase().split('-')[0];
      if (isLocale(base)) return base;
    }
  }
  if (acceptLanguage) {
    const ranked = acceptLanguage
      .split(',')
      .map((part) => {
        const [tag = '', ...params] = part.trim().split(';');
        const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
        return { base: tag.toLowerCase().split('-')[0], q: q ? Number(q.slice(2)) || 0 : 1 };
      })
      .sort((a, b) => b.q - a.q);
    for (const { base, q } of ranked) if (q > 0 && isLocale(base)) return base;
  }
  return DEFAULT_LOCALE;
}
